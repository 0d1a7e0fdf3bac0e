"""Decode to and encode from RGB ``uint8`` CHW tensors, metadata-free by construction.

* EXIF orientation is read from the bytes and applied to the pixels first (the
  same way on CPU and GPU), so the output needs no orientation tag and the
  labels stay aligned with what Ultralytics shows a model (it also applies it).
* Outputs are encoded from pixels only: no EXIF, GPS, XMP, IPTC, ICC or comment
  segment can survive, because nothing is copied from the input file.
* JPEG decode/encode use nvJPEG on CUDA (``torchvision.io``), OpenCV's
  libjpeg-turbo decoder and torchvision's encoder on the CPU. Other formats
  (PNG, BMP, WebP, TIFF) go through OpenCV and keep their format, since the
  output keeps its path.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
CV2_SUFFIXES = frozenset({".png", ".bmp", ".webp", ".tif", ".tiff"})
_EXIF_ORIENTATION = 0x0112


class DecodeError(ValueError):
    """Bytes that no decoder accepts as an image."""


def output_suffix(relpath: str) -> str:
    suffix = PurePosixPath(relpath).suffix.lower()
    if suffix not in JPEG_SUFFIXES | CV2_SUFFIXES:
        raise DecodeError(f"unsupported image suffix {suffix!r}")
    return suffix


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def read_orientation(data: bytes) -> int:
    """EXIF orientation (1..8) of any format Pillow can open; 1 when absent or unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: reads headers, not pixels
            value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not stop decoding; pixels stay as stored
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a CHW tensor (the mapping of PIL.ImageOps.exif_transpose)."""
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1, 2)
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return image.rot90(-1, (1, 2))
    if orientation == 7:
        return image.transpose(1, 2).flip(1, 2)
    if orientation == 8:
        return image.rot90(1, (1, 2))
    return image


def decode_cpu(data: bytes) -> torch.Tensor:
    """Decode on the CPU to an RGB uint8 CHW tensor with orientation applied (a view; may be non-contiguous)."""
    import cv2
    import numpy as np
    import torch

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise DecodeError("not a decodable image")
    return apply_orientation(torch.from_numpy(arr).permute(2, 0, 1), read_orientation(data))


def decode_cuda(datas: list[bytes], device: str) -> list[torch.Tensor | DecodeError]:
    """Batched nvJPEG decode; anything nvJPEG refuses (CMYK, progressive oddities, non-JPEG) falls back to the CPU."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | DecodeError | None] = [None] * len(datas)
    jpeg_idx = [i for i, d in enumerate(datas) if is_jpeg(d)]
    if jpeg_idx:
        raws = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in jpeg_idx]
        try:
            decoded = decode_jpeg(raws, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [None] * len(jpeg_idx)  # one bad file fails the whole call: retry one by one below
        for i, img in zip(jpeg_idx, decoded, strict=True):
            out[i] = img
    for i, d in enumerate(datas):
        if out[i] is None:
            try:
                out[i] = decode_cpu(d).to(device)
                continue
            except DecodeError as exc:
                out[i] = exc
        elif not isinstance(out[i], DecodeError):
            out[i] = apply_orientation(out[i], read_orientation(d))
    return out  # type: ignore[return-value]


def encode(images: list[torch.Tensor], suffixes: list[str], quality: int) -> list[bytes]:
    """Encode RGB uint8 CHW tensors (CPU or CUDA) in the format their suffix names."""
    import cv2
    import numpy as np
    import torch
    from torchvision.io import encode_jpeg

    out: list[bytes | None] = [None] * len(images)
    jpeg_idx = [i for i, s in enumerate(suffixes) if s in JPEG_SUFFIXES]
    if jpeg_idx:
        tensors = [images[i].contiguous() for i in jpeg_idx]
        encoded = encode_jpeg(tensors, quality=quality)  # a list in, a list out: nvJPEG batches it on CUDA
        for i, enc in zip(jpeg_idx, encoded, strict=True):
            out[i] = enc.cpu().numpy().tobytes()
    for i, s in enumerate(suffixes):
        if out[i] is None:
            arr = images[i].permute(1, 2, 0).to("cpu", torch.uint8).numpy()
            params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if s == ".png" else []
            if s == ".webp":
                params = [cv2.IMWRITE_WEBP_QUALITY, 101]  # > 100: lossless
            ok, buf = cv2.imencode(s, np.ascontiguousarray(arr[:, :, ::-1]), params)
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {s}")
            out[i] = buf.tobytes()
    return out  # type: ignore[return-value]
