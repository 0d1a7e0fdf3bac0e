"""Image checks on real encoded bytes: sniffing, bomb guard, truncation, EXIF, bit depth."""

from __future__ import annotations

import io
import time

import pytest

from secure_data.integrity.images import configure_pillow, inspect_image, sniff_format


def encode(fmt: str, size=(32, 24), mode="RGB", **params) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, format=fmt, **params)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(autouse=True)
def _pillow():
    configure_pillow(50_000_000)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"])
def test_sniff_from_bytes(fmt):
    assert sniff_format(encode(fmt)) == fmt


def test_sniff_rejects_text_and_unknown():
    assert sniff_format(b"hello world") is None
    assert sniff_format(b"%!PS-Adobe-3.0 EPSF") is None  # never handed to Pillow's EPS (Ghostscript) plugin


def test_valid_jpeg_meta():
    meta, findings = inspect_image(encode("JPEG"), ".jpg", max_pixels=10_000)
    assert findings == []
    assert meta == {"format": "JPEG", "width": 32, "height": 24, "channels": 3, "bit_depth": 8, "frames": 1,
                    "has_exif": False, "has_gps": False, "orientation": 1}


def test_grey_and_16_bit_png():
    meta, _ = inspect_image(encode("PNG", mode="L"), ".png", max_pixels=10_000)
    assert meta["channels"] == 1 and meta["bit_depth"] == 8
    meta, _ = inspect_image(encode("PNG", mode="I;16"), ".png", max_pixels=10_000)
    assert meta["channels"] == 1 and meta["bit_depth"] == 16


def test_bomb_is_refused_from_the_header_without_decoding():
    t0 = time.perf_counter()
    meta, findings = inspect_image(png_header(100_000, 100_000), ".png", max_pixels=50_000_000)
    assert [f.code for f in findings] == ["decompression_bomb"]
    assert time.perf_counter() - t0 < 5  # 10^10 pixels were never allocated (30 GB)
    # just above our limit but below Pillow's own error threshold: the explicit check fires
    _, findings = inspect_image(png_header(6000, 6000), ".png", max_pixels=30_000_000)
    assert [f.code for f in findings] == ["decompression_bomb"] and "max_pixels 30000000" in findings[0].detail


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_fail_the_full_decode(fmt):
    from PIL import Image

    out = io.BytesIO()
    import random

    rnd = random.Random(0)
    img = Image.frombytes("RGB", (64, 64), bytes(rnd.randrange(256) for _ in range(64 * 64 * 3)))
    img.save(out, format=fmt)
    data = out.getvalue()
    assert inspect_image(data, ".x", max_pixels=10**6)[1][0].code == "extension_mismatch"
    meta, findings = inspect_image(data[: len(data) // 2], "." + fmt.lower().replace("jpeg", "jpg"),
                                   max_pixels=10**6)
    assert [f.code for f in findings] == ["truncated"]
    assert meta["width"] == 64  # the header alone looked fine


def test_truncated_stays_detected_when_another_library_loosened_pillow():
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what some training libraries do globally
    configure_pillow(10**6)
    data = encode("JPEG", size=(64, 64))
    assert [f.code for f in inspect_image(data[:-40], ".jpg", max_pixels=10**6)[1]] == ["truncated"]


def test_text_empty_and_extension_mismatch():
    assert [f.code for f in inspect_image(b"just text", ".jpg", max_pixels=10)[1]] == ["not_an_image"]
    assert [f.code for f in inspect_image(b"", ".jpg", max_pixels=10)[1]] == ["empty_file"]
    meta, findings = inspect_image(encode("PNG"), ".jpg", max_pixels=10_000)
    assert meta["format"] == "PNG" and [f.code for f in findings] == ["extension_mismatch"]


def test_corrupt_header_is_a_decode_error():
    data = bytearray(encode("PNG"))
    data[20] ^= 0xFF  # inside IHDR: the CRC no longer matches
    assert [f.code for f in inspect_image(bytes(data), ".png", max_pixels=10_000)[1]] == ["decode_error"]


def _hostile_exif_jpeg(n_entries: int = 5000) -> bytes:
    from secure_data_testkit.badinputs import exif_many_entries, insert_jpeg_segments

    return insert_jpeg_segments(encode("JPEG"), [(0xE1, exif_many_entries(n_entries))])


def test_hostile_exif_is_one_meta_flag_not_thousands_of_warnings():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta, findings = inspect_image(_hostile_exif_jpeg(), ".jpg", max_pixels=10_000)
    assert caught == []
    assert findings == []  # the pixels decode; anonymization drops the EXIF anyway
    assert meta["exif_malformed"] is True and meta["pillow_warnings"] == 5000
    # the same bytes give the same record every time (Python's "warn once" registry plays no part)
    assert inspect_image(_hostile_exif_jpeg(), ".jpg", max_pixels=10_000)[0] == meta


def test_collecting_warnings_is_per_thread_and_restores_global_state():
    import logging
    import threading
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from secure_data.dataset.pillow_warnings import collect_pillow_warnings

    hostile, clean = _hostile_exif_jpeg(300), encode("JPEG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters, hook = list(warnings.filters), warnings.showwarning
        with ThreadPoolExecutor(max_workers=8) as pool:
            metas = list(pool.map(lambda i: inspect_image(hostile if i % 2 else clean, ".jpg", max_pixels=10_000)[0],
                                  range(64)))
        assert [m.get("pillow_warnings") for m in metas] == [None, 300] * 32
        # a thread that is not collecting keeps its warnings while another thread collects
        inside, release = threading.Event(), threading.Event()

        def hold_window():
            with collect_pillow_warnings():
                inside.set()
                release.wait(10)

        holder = threading.Thread(target=hold_window)
        holder.start()
        inside.wait(10)
        warnings.warn("not Pillow's", UserWarning, stacklevel=1)
        release.set()
        holder.join()
        assert [str(w.message) for w in caught] == ["not Pillow's"]
        assert warnings.filters == filters and warnings.showwarning is hook
    assert logging.getLogger("PIL").level == logging.NOTSET
