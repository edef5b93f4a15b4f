"""The bulk command: inputs of every kind, every output format, resume, exit status, and the Ray path giving the
same ages as the local one."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bulk.__main__ import main
from bulk.inputs import expand
from testkit import FIXTURES, ROOT


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for name in ("astronaut.jpg", "group.jpg", "rocket.jpg"):
        shutil.copy(FIXTURES / name, root / name)
    shutil.copy(FIXTURES / "astronaut.jpg", root / "sub" / "again.JPG")
    (root / "sub" / "notes.png").write_text("not an image")
    (root / "list.txt").write_text("# photos\nastronaut.jpg\nabsent.jpg\n")
    return root


def rows_of(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    return [json.loads(line) for line in path.read_text().splitlines()]


def rows_by_file(out: Path) -> dict[str, list[dict]]:
    """The rows of a run's output (CSV, JSONL or Parquet), by file name."""
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    else:
        rows = rows_of(out)
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(Path(row["file"]).name, []).append(row)
    return by_file


def test_inputs_mix_folders_lists_and_files(photos):
    paths = list(expand([photos, photos / "list.txt", photos / "rocket.jpg"]))
    names = [Path(p).name for p in paths]
    assert names == ["astronaut.jpg", "group.jpg", "rocket.jpg", "again.JPG", "notes.png", "absent.jpg"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_one_row_per_face_and_an_error_row_per_failed_photo(photos, tmp_path, suffix):
    out = tmp_path / f"ages{suffix}"
    assert main([str(photos), str(photos / "list.txt"), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    by_file = rows_by_file(out)
    assert len(by_file["group.jpg"]) == 3 and [str(r["face"]) for r in by_file["group.jpg"]] == ["0", "1", "2"]
    (astronaut,) = by_file["astronaut.jpg"]
    assert 15 < float(astronaut["age"]) < 70 and float(astronaut["age_low"]) < float(astronaut["age"])
    assert not astronaut["error"]
    assert by_file["rocket.jpg"][0]["error"] == "no_face"
    assert by_file["notes.png"][0]["error"] == "unsupported_image_type"
    assert by_file["absent.jpg"][0]["error"] == "file_not_readable"


def test_deltas_on_request(photos, tmp_path):
    out = tmp_path / "d.jsonl"
    main([str(photos / "astronaut.jpg"), "--out", str(out), "--deltas", "--workers", "1", "--no-progress"])
    assert len(rows_of(out)[0]["delta_ages"]) == 100


def test_resume_skips_what_is_done(photos, tmp_path):
    out = tmp_path / "r.csv"
    main([str(photos / "astronaut.jpg"), "--out", str(out), "--workers", "1", "--no-progress"])
    main([str(photos), "--out", str(out), "--resume", "--workers", "1", "--no-progress"])
    files = [Path(r["file"]).name for r in rows_of(out)]
    assert files.count("astronaut.jpg") == 1 and files.count("group.jpg") == 3


def test_exit_status_is_nonzero_only_when_nothing_could_be_read(photos, tmp_path):
    assert (
        main([str(photos / "sub" / "notes.png"), "--out", str(tmp_path / "x.csv"), "--no-progress", "--workers", "1"]) == 1
    )
    assert (
        main([str(photos / "rocket.jpg"), "--out", str(tmp_path / "y.csv"), "--no-progress", "--workers", "1"]) == 0
    )  # read, no face: not a failure
    assert main([str(photos), "--out", str(tmp_path / "z.txt")]) == 2  # unknown format


@pytest.mark.slow
def test_console_script_with_two_worker_processes(photos, tmp_path):
    out = tmp_path / "p.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "bulk", str(photos), "--out", str(out), "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "photos/s" in proc.stderr
    assert sum(1 for r in rows_of(out) if not r["error"]) == 5


@pytest.mark.slow
def test_ray_gives_the_same_ages_as_the_local_path(photos, tmp_path):
    pytest.importorskip("ray", reason='the [ray] extra: pip install -e ".[ray]"')
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main([str(photos), "--out", str(local), "--workers", "1", "--no-progress"]) == 0
    assert main([str(photos), "--out", str(on_ray), "--ray", "local", "--workers", "2", "--no-progress"]) == 0
    a, b = rows_of(local), rows_of(on_ray)
    assert [(r["file"], r["face"], r["error"]) for r in a] == [(r["file"], r["face"], r["error"]) for r in b]
    for x, y in zip(a, b):
        if x["age"] is not None:
            assert abs(x["age"] - y["age"]) < 0.01


# ------------------------------------------------------------------------------- every entry accounted for


@pytest.fixture()
def awkward(tmp_path) -> Path:
    """A folder of entries that are not plain photos, beside two that are."""
    root = tmp_path / "awkward"
    root.mkdir()
    shutil.copy(FIXTURES / "astronaut.jpg", root / "plain.jpg")
    shutil.copy(FIXTURES / "astronaut.jpg", root / "=HYPERLINK(1).jpg")  # a formula, if a spreadsheet ran it
    shutil.copy(FIXTURES / "astronaut.jpg", os.fsdecode(bytes(root) + b"/caf\xe9.jpg"))  # Latin-1, not UTF-8
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    os.mkfifo(root / "fifo.jpg")
    (root / "folder.jpg").mkdir()
    return root


def test_every_entry_gets_one_row_and_nothing_blocks(awkward, tmp_path, monkeypatch):
    monkeypatch.setenv("DAA_MAX_UPLOAD_BYTES", str(200_000))
    (awkward / "big.png").write_bytes(b"\x89PNG" + b"\0" * 300_000)  # over the limit: never read whole
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"awkward/plain.jpg\nawkward/../awkward/plain.jpg\n/dev/zero\nawkward/fifo.jpg\nawkward/\xff.jpg\n")
    out = tmp_path / "rows.csv"
    monkeypatch.chdir(awkward)  # relative names: "=HYPERLINK(1).jpg" starts its cell
    assert main([".", str(listing), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    rows = rows_of(out)
    codes = {r["file"].rsplit("/", 1)[-1]: r["error"] for r in rows}
    assert codes["plain.jpg"] == "" and codes["'=HYPERLINK(1).jpg"] == ""  # escaped as data for spreadsheets
    assert codes["caf\\xe9.jpg"] == codes["\\xff.jpg"] == "name_not_decodable"
    assert codes["dangling.jpg"] == "file_not_readable" and codes["loop.jpg"] == "symlink_loop"
    assert codes["fifo.jpg"] == codes["folder.jpg"] == codes["zero"] == "not_regular_file"
    assert codes["big.png"] == "file_too_large"
    assert sum(1 for r in rows if r["file"].endswith("plain.jpg")) == 1  # a/../a/x.jpg is the same entry
    assert len({r["file"] for r in rows}) == 10  # 8 in the folder, /dev/zero and the listed undecodable name


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_after_a_cut_keeps_whole_photos_only(photos, tmp_path, suffix):
    args = [str(photos), "--workers", "1", "--no-progress", "--batch", "2"]
    clean, cut = tmp_path / f"clean{suffix}", tmp_path / f"cut{suffix}"
    assert main([*args, "--out", str(clean)]) == 0
    data = clean.read_bytes()
    # Cut in the middle of the second of group.jpg's three face rows: a half line, and a photo with one row.
    lines = data.split(b"\n")
    group = [i for i, line in enumerate(lines) if b"group.jpg" in line]
    cut.write_bytes(b"\n".join(lines[: group[1]]) + b"\n" + lines[group[1]][:25])
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    key = lambda rows: sorted((r["file"], str(r["face"]), str(r["error"])) for r in rows)  # noqa: E731
    assert key(rows_of(cut)) == key(rows_of(clean))


def test_resume_refuses_an_output_with_other_columns(photos, tmp_path, capsys):
    out = tmp_path / "plain.csv"
    assert main([str(photos / "astronaut.jpg"), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert main([str(photos), "--out", str(out), "--resume", "--deltas", "--workers", "1", "--no-progress"]) == 2
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_keeps_the_finished_rows_of_a_parquet_run(tmp_path):
    import signal
    import time

    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        shutil.copy(FIXTURES / "astronaut.jpg", folder / f"p{i:02d}.jpg")
    out = tmp_path / "ages.parquet"
    cmd = [sys.executable, "-m", "bulk", str(folder), "--out", str(out), "--workers", "1", "--batch", "2"]
    proc = subprocess.Popen([*cmd, "--no-progress"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    tmp = out.with_name(out.name + ".tmp")
    deadline = time.monotonic() + 120
    while (not tmp.exists() or tmp.stat().st_size < 8000) and time.monotonic() < deadline:
        time.sleep(0.2)  # some row groups written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    kept = pq.read_table(out).num_rows
    assert 0 < kept < 60
    assert subprocess.run([*cmd, "--resume", "--no-progress"], cwd=ROOT, timeout=300).returncode == 0
    files = pq.read_table(out).column("file").to_pylist()
    assert len(files) == len(set(files)) == 60


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_clips_in_a_collection_give_one_row_per_track(tmp_path, suffix):
    from testkit import encode_clip, fixture_faces, moving_faces

    (tmp_path / "in").mkdir()
    shutil.copy(FIXTURES / "astronaut.jpg", tmp_path / "in" / "photo.jpg")
    a, b = fixture_faces()[:2]
    (tmp_path / "in" / "two.mp4").write_bytes(encode_clip(moving_faces([a, b], size=(800, 400), seconds=2), fps=30))
    (tmp_path / "in" / "broken.webm").write_bytes(b"not a clip")
    out = tmp_path / f"ages{suffix}"
    assert main([str(tmp_path / "in"), "--out", str(out), "--workers", "1", "--no-progress", "--deltas"]) == 0
    by_file = rows_by_file(out)
    tracks = by_file["two.mp4"]
    assert len(tracks) == 2 and [str(t["face"]) for t in tracks] == ["1", "2"]
    for t in tracks:
        assert float(t["age_low"]) <= float(t["age"]) <= float(t["age_high"]) and not t["error"]
        assert float(t["start_s"]) == 0 and float(t["end_s"]) > 1.5 and int(float(t["frames"])) == 10
    (photo,) = by_file["photo.jpg"]
    assert photo["start_s"] in ("", None) and photo["age"]
    assert by_file["broken.webm"][0]["error"] == "unsupported_video_type"
