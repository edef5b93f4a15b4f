"""POST /estimate end to end: the real bundled model and the real MTCNN on public-domain photos."""

from __future__ import annotations

from PIL import Image, ImageOps

from testkit import encode, fixture_bytes, post_image


def test_one_face_returns_box_age_uncertainty_and_100_deltas(client):
    r = post_image(client, fixture_bytes("astronaut.jpg"))
    assert r.status_code == 200
    body = r.json()
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    box = face["box"]
    # The portrait's face on the 320 px fixture spans about x 112-168, y 37-110.
    assert 100 < box["x1"] < 125 and 155 < box["x2"] < 180 and 25 < box["y1"] < 50 and 95 < box["y2"] < 125
    assert len(face["landmarks"]) == 5 and face["detection_score"] > 0.9
    assert 15 < face["age"] < 70  # an adult
    assert face["uncertainty"] >= 0
    assert face["age_range"]["low"] <= face["age"] <= face["age_range"]["high"]
    assert body["reference_ages"] == list(range(100))
    assert len(face["delta_ages"]) == 100
    estimates = [y - d for y, d in zip(body["reference_ages"], face["delta_ages"])]
    assert abs(sum(estimates) / 100 - face["age"]) < 0.01  # Eq. 9, as the response reports it
    assert body["image"] == {"width": 320, "height": 320, "format": "JPEG"}
    assert body["model"]["name"]
    assert set(body["timing"]) == {"decode_ms", "detect_ms", "estimate_ms", "total_ms"}


def test_faceless_photo_returns_no_faces(client):
    r = post_image(client, fixture_bytes("rocket.jpg"))
    assert r.status_code == 200
    assert r.json()["faces"] == []


def test_group_photo_lists_faces_largest_first(client):
    r = post_image(client, fixture_bytes("group.jpg"))
    faces = r.json()["faces"]
    assert len(faces) == 3
    areas = [(f["box"]["x2"] - f["box"]["x1"]) * (f["box"]["y2"] - f["box"]["y1"]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert len(post_image(client, fixture_bytes("group.jpg"), max_faces=2).json()["faces"]) == 2
    # A minimum face size above the smallest face (about 48 px wide) drops it.
    assert len(post_image(client, fixture_bytes("group.jpg"), min_face_size=55).json()["faces"]) == 2


def test_reference_interval_and_deltas_option(client):
    body = post_image(client, fixture_bytes("astronaut.jpg"), reference_interval=10).json()
    assert body["reference_ages"] == list(range(0, 100, 10))
    assert len(body["faces"][0]["delta_ages"]) == 10
    body = post_image(client, fixture_bytes("astronaut.jpg"), include_deltas="false").json()
    assert body["faces"][0]["delta_ages"] is None
    r = post_image(client, fixture_bytes("astronaut.jpg"), reference_interval=3)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


def test_every_accepted_format_gives_the_same_face(client, astronaut):
    reference = post_image(client, encode(astronaut, "PNG"), "a.png", "image/png").json()["faces"][0]["age"]
    frames = [astronaut, ImageOps.invert(astronaut)]
    variants = {
        "webp": encode(astronaut, "WEBP", lossless=True),
        "bmp": encode(astronaut, "BMP"),
        "tiff": encode(astronaut, "TIFF"),
        "gif": encode(
            frames[0].quantize(256), "GIF", save_all=True, append_images=[frames[1].quantize(256)], duration=100, loop=0
        ),
        "cmyk": encode(astronaut.convert("CMYK"), "JPEG", quality=95),
    }
    for name, data in variants.items():
        r = post_image(client, data, f"a.{name}", "application/octet-stream")
        assert r.status_code == 200, (name, r.text)
        faces = r.json()["faces"]
        assert len(faces) == 1, name
        tol = 6.0 if name in ("gif", "cmyk") else 1.0  # palette and CMYK round trips change pixels
        assert abs(faces[0]["age"] - reference) < tol, name


def test_sixteen_bit_png(client, astronaut):
    grey16 = Image.fromarray(__import__("numpy").asarray(astronaut.convert("L"), dtype="uint16") * 257)
    r = post_image(client, encode(grey16, "PNG"), "a.png", "image/png")
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_exif_orientation_is_applied(client, astronaut):
    rotated = astronaut.rotate(90, expand=True)  # stored on its side...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with EXIF saying "rotate 90 degrees clockwise to display"
    body = post_image(client, encode(rotated, "JPEG", exif=exif.tobytes(), quality=95)).json()
    assert len(body["faces"]) == 1
    box = body["faces"][0]["box"]
    assert 100 < box["x1"] < 125 and 25 < box["y1"] < 50  # coordinates in the upright image
