"""Decoding applies EXIF orientation; outputs carry no metadata (EXIF, GPS, XMP, IPTC, ICC, comments)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from secure_data.anonymize import AnonymizeConfig, DetectorSpec, run_anonymize_shard
from secure_data.anonymize.codec import apply_orientation, decode_cpu, encode, read_orientation
from secure_data.dataset.stage import RunLayout

SECRET_COMMENT = b"owner: Jane Roe, +1 555 0100"
XMP = (b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF><rdf:Description "
       b"xmlns:dc='http://purl.org/dc/elements/1.1/' dc:creator='Jane Roe'/></rdf:RDF></x:xmpmeta>")
# IPTC-IIM record 2:80 (By-line) wrapped in a Photoshop 8BIM resource 0x0404, as APP13 carries it.
_IPTC = b"\x1c\x02\x50" + struct.pack(">H", 8) + b"Jane Roe"
IPTC_APP13 = (b"Photoshop 3.0\x00" + b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00"
              + struct.pack(">I", len(_IPTC)) + _IPTC)
ICC = b"ICC_PROFILE\x00\x01\x01" + b"\x00" * 128


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_markers(data: bytes) -> list[int]:
    """Markers from SOI up to and including SOS (the header part where metadata lives)."""
    assert data[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"bad marker at {pos}"
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        pos += 2 + length
    return markers


def jpeg_with_everything(pixels: np.ndarray, orientation: int) -> bytes:
    """A JPEG with EXIF (camera, GPS, orientation), XMP, IPTC (APP13), an ICC profile and a COM comment."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0110] = "Model X"
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS IFD
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    data = buf.getvalue()
    extra = segment(0xE1, XMP) + segment(0xED, IPTC_APP13) + segment(0xE2, ICC) + segment(0xFE, SECRET_COMMENT)
    return data[:2] + extra + data[2:]


def png_with_text(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    data = buf.getvalue()
    text = b"Author\x00Jane Roe"
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    return data[:33] + chunk + data[33:]  # after the IHDR chunk


def png_chunks(data: bytes) -> list[bytes]:
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return out


def gradient(h=48, w=64) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * 4 % 256, ys * 5 % 256, (xs + ys) * 2 % 256], -1).astype(np.uint8)


def test_the_fixture_really_carries_all_metadata():
    data = jpeg_with_everything(gradient(), orientation=6)
    markers = jpeg_markers(data)
    assert {0xE1, 0xED, 0xE2, 0xFE} <= set(markers)
    with Image.open(io.BytesIO(data)) as im:
        exif = im.getexif()
        assert exif[0x0112] == 6 and exif[0x010F] == "SecretCam"
        assert exif.get_ifd(0x8825)[1] == "N"
    assert b"Jane Roe" in data and SECRET_COMMENT in data


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation):
    data = jpeg_with_everything(gradient(), orientation)
    assert read_orientation(data) == orientation
    ours = decode_cpu(data).permute(1, 2, 0).numpy()
    with Image.open(io.BytesIO(data)) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 2.0  # two JPEG decoders, same pixels


def test_apply_orientation_is_a_pure_permutation():
    img = torch.arange(2 * 3 * 3).view(2, 3, 3)[:1].expand(3, 3, 3).clone()
    assert torch.equal(apply_orientation(img, 1), img)
    assert torch.equal(apply_orientation(apply_orientation(img, 6), 8), img)
    assert torch.equal(apply_orientation(apply_orientation(img, 3), 3), img)


def test_encoders_write_pixels_only():
    img = torch.from_numpy(gradient()).permute(2, 0, 1)
    jpg, png = encode([img, img], [".jpg", ".png"], quality=90)
    assert set(jpeg_markers(jpg)) <= {0xD8, 0xE0, 0xDB, 0xC0, 0xC4, 0xDD, 0xDA}
    assert set(png_chunks(png)) == {b"IHDR", b"IDAT", b"IEND"}
    assert np.array_equal(decode_cpu(png).permute(1, 2, 0).numpy(), gradient())  # PNG stays lossless


def test_pipeline_outputs_carry_no_metadata(tmp_path, demo_model, make_upstream):
    root = tmp_path / "ds"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  0: face\n  1: plate\n")
    from secure_data_testkit.datasets import draw_sample

    bgr, _ = draw_sample(np.random.default_rng(21), 320, 240)  # what the demo detector knows: faces, plates
    pixels = np.ascontiguousarray(bgr[:, :, ::-1])
    # As a camera held upright stores it: pixels turned a quarter left, orientation 6 to turn them back.
    stored = np.ascontiguousarray(np.rot90(pixels, k=1))
    (root / "images" / "train" / "rotated.jpg").write_bytes(jpeg_with_everything(stored, orientation=6))
    (root / "images" / "train" / "plain.jpg").write_bytes(jpeg_with_everything(pixels, orientation=1))
    (root / "images" / "train" / "text.png").write_bytes(png_with_text(pixels))
    layout = RunLayout.for_run(tmp_path / "out", "dag", "meta")
    up = make_upstream(root, layout)
    path, sha = demo_model
    cfg = AnonymizeConfig(detectors=(DetectorSpec(str(path), sha),), imgsz=160, batch_size=4, device="cpu")
    result = run_anonymize_shard(up, layout, config=cfg)
    assert result["counts"]["anonymized"] == 3
    out = Path(layout.stage("anonymize")) / "data" / "images" / "train"
    for name in ("rotated.jpg", "plain.jpg"):
        data = (out / name).read_bytes()
        assert set(jpeg_markers(data)) <= {0xD8, 0xE0, 0xDB, 0xC0, 0xC2, 0xC4, 0xDD, 0xDA}, name
        for needle in (b"Exif", b"SecretCam", b"http://ns.adobe.com", b"Photoshop 3.0", b"8BIM", b"ICC_PROFILE",
                       SECRET_COMMENT, b"Jane Roe"):
            assert needle not in data, (name, needle)
        with Image.open(io.BytesIO(data)) as im:
            assert len(im.getexif()) == 0 and "comment" not in im.info and "icc_profile" not in im.info
    with Image.open(out / "rotated.jpg") as im:
        assert stored.shape[:2] == (320, 240) and im.size == (320, 240)  # orientation 6 applied to the pixels
    png = (out / "text.png").read_bytes()
    assert set(png_chunks(png)) == {b"IHDR", b"IDAT", b"IEND"} and b"Jane Roe" not in png
