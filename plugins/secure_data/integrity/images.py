"""Image checks on bytes already read and hashed: sniff, header, bomb guard, EXIF, full decode.

Order matters: the type comes from the magic bytes (never the extension), the
header dimensions are checked against ``max_pixels`` BEFORE anything is decoded,
and only then is the whole image decoded (a header-only open proves little:
a truncated JPEG has a perfect header).

Pillow's warnings are collected, not printed: a hostile EXIF block makes Pillow warn once per
IFD entry (thousands per image). They become the meta fields ``pillow_warnings`` (how many)
and ``exif_malformed`` (some came from the EXIF/TIFF parser) on the image's record.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from secure_data.dataset.pillow_warnings import collect_pillow_warnings
from secure_data.integrity import codes
from secure_data.integrity.codes import FileFinding

# Extension -> the format a file with that name should contain.
EXTENSION_FORMATS: Mapping[str, str] = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF",
}
_EXIF_GPS_IFD = 0x8825
_EXIF_ORIENTATION = 0x0112
# Bits per channel for Pillow modes that are not 8 bits.
_MODE_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
# The Pillow module that parses EXIF (and TIFF) IFDs: its warnings mean the EXIF block is malformed.
_EXIF_PARSER = "TiffImagePlugin.py"


def sniff_format(data: bytes) -> str | None:
    """The image format from the magic bytes (Pillow's name), or None when it is no image we accept."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM") and len(data) >= 26:
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def describe_unknown(data: bytes) -> str:
    """A short, log-safe description of bytes that are no image (no content is echoed)."""
    head = data[:512]
    try:
        head.decode("utf-8")
        looks = "text"
    except UnicodeDecodeError:
        looks = "binary"
    return f"magic bytes {data[:8].hex()} ({looks}) match no image format"


def configure_pillow(max_pixels: int) -> None:
    """Set Pillow's process-wide guards explicitly; other libraries are known to loosen them.

    ``MAX_IMAGE_PIXELS``: Pillow warns above it and raises above twice it (our own
    check quarantines above it anyway). ``LOAD_TRUNCATED_IMAGES`` must be False or a
    truncated file decodes "successfully" with grey padding.
    """
    from PIL import Image, ImageFile

    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def _bit_depth(data: bytes, fmt: str, mode: str) -> int:
    if fmt == "PNG" and len(data) >= 25:
        return data[24]  # IHDR bit depth: Pillow reads 16-bit RGB PNGs as 8-bit RGB
    return _MODE_BITS.get(mode, 8)


def inspect_image(data: bytes, suffix: str, *, max_pixels: int) -> tuple[dict[str, Any], list[FileFinding]]:
    """Check one image's bytes. Returns (meta, findings); never raises for bad input.

    Pillow's warnings (EXIF ones can number thousands per file) are counted into ``meta`` instead of
    reaching the log; EXIF tags Pillow skipped as corrupt leave ``exif_malformed: True``.
    """
    with collect_pillow_warnings() as caught:
        meta, findings = _inspect(data, suffix, max_pixels=max_pixels)
    if caught:
        meta["pillow_warnings"] = len(caught)
        if any(w.source == _EXIF_PARSER for w in caught):
            meta["exif_malformed"] = True
    return meta, findings


def _inspect(data: bytes, suffix: str, *, max_pixels: int) -> tuple[dict[str, Any], list[FileFinding]]:
    from PIL import Image

    findings: list[FileFinding] = []
    meta: dict[str, Any] = {}
    if not data:
        return meta, [FileFinding(codes.EMPTY_FILE, "zero-byte file")]
    fmt = sniff_format(data)
    if fmt is None:
        return meta, [FileFinding(codes.NOT_AN_IMAGE, describe_unknown(data))]
    meta["format"] = fmt
    expected = EXTENSION_FORMATS.get(suffix.lower())
    if expected != fmt:
        findings.append(FileFinding(codes.EXTENSION_MISMATCH, f"named {suffix or '(no suffix)'} but the bytes are {fmt}"))

    # 1. header only: dimensions, mode. Pillow raises DecompressionBombError above 2x its limit.
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        findings.append(FileFinding(codes.DECOMPRESSION_BOMB, str(exc)))
        return meta, findings
    except Exception as exc:  # noqa: BLE001 - any parser failure is a finding, not a crash
        findings.append(FileFinding(codes.DECODE_ERROR, f"header: {type(exc).__name__}: {exc}"))
        return meta, findings
    with img:
        width, height = img.size
        meta.update(width=width, height=height, channels=len(img.getbands()),
                    bit_depth=_bit_depth(data, fmt, img.mode), frames=int(getattr(img, "n_frames", 1)))
        if width <= 0 or height <= 0:
            findings.append(FileFinding(codes.DECODE_ERROR, f"header claims {width}x{height}"))
            return meta, findings
        # 2. the explicit bomb check, before any pixel is decoded
        if width * height > max_pixels:
            findings.append(FileFinding(codes.DECOMPRESSION_BOMB,
                                    f"header claims {width}x{height} = {width * height} pixels > max_pixels {max_pixels}"))
            return meta, findings
        # 3. metadata
        try:
            exif = img.getexif()
            meta["has_exif"] = len(exif) > 0
            gps = exif.get_ifd(_EXIF_GPS_IFD) if _EXIF_GPS_IFD in exif else {}
            meta["has_gps"] = bool(gps)
            orientation = exif.get(_EXIF_ORIENTATION, 1)
            meta["orientation"] = int(orientation) if isinstance(orientation, int) else 0
        except Exception as exc:  # noqa: BLE001 - corrupt EXIF is a corrupt file
            # (for PNG, reading EXIF decodes the image data to reach chunks after IDAT)
            findings.append(_decode_failure(exc, "EXIF: "))
            return meta, findings
        if meta["has_gps"]:
            findings.append(FileFinding(codes.EXIF_GPS, "EXIF carries a GPS position"))
        if meta["orientation"] != 1:
            findings.append(FileFinding(codes.EXIF_ORIENTATION, f"EXIF orientation {meta['orientation']}"))
        # 4. full decode of the (first) frame: proves every byte up to the end decodes
        try:
            img.load()
        except Exception as exc:  # noqa: BLE001
            findings.append(_decode_failure(exc))
    return meta, findings


def _decode_failure(exc: Exception, prefix: str = "") -> FileFinding:
    """Pillow says "image file is truncated" (OSError) when the data ends early; anything else is corrupt."""
    truncated = isinstance(exc, OSError) and "truncated" in str(exc).lower()
    return FileFinding(codes.TRUNCATED if truncated else codes.DECODE_ERROR, f"{prefix}{type(exc).__name__}: {exc}")

