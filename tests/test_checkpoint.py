"""The checkpoint format: round trip, and a clear error naming the file for each kind of broken file."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.factory import build_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="c3ae")).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, {"metrics": {"mae": 4.2}, "split": {"seed": 0}})
    return model, path


def test_round_trip(saved):
    model, path = saved
    loaded, meta = load_checkpoint(path)
    assert meta == {"metrics": {"mae": 4.2}, "split": {"seed": 0}}
    assert loaded.config == model.config
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).deltas, model(x).deltas)
    payload = torch.load(path, weights_only=True)  # plain data only: loads with weights_only
    assert set(payload) >= {"format", "format_version", "config", "state_dict", "metadata"}


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="absent.pt: file not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_empty_file(tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="e.pt: file is empty"):
        load_checkpoint(tmp_path / "e.pt")


def test_truncated_file(saved, tmp_path):
    _, path = saved
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(cut)


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a daa-age-checkpoint file"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"format": "daa-age-checkpoint", "evil": ModelConfig()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="code.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "code.pt")


def test_weights_that_do_not_match_the_config(saved, tmp_path):
    _, path = saved
    payload = read_checkpoint(path)
    payload["config"]["decoder_channels"] = 32
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt: weights do not match the model config"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_invalid_config_and_version(saved, tmp_path):
    _, path = saved
    payload = read_checkpoint(path)
    torch.save({**payload, "config": {**payload["config"], "encoder": "vgg99"}}, tmp_path / "enc.pt")
    with pytest.raises(CheckpointError, match="enc.pt: invalid model config"):
        load_checkpoint(tmp_path / "enc.pt")
    torch.save({**payload, "format_version": 99}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="v.pt: format version 99"):
        load_checkpoint(tmp_path / "v.pt")
