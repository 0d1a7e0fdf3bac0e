"""A real-face test set built from photographs that PyPI wheels ship, with hand-checked face boxes.

Base photographs (each pinned by SHA-256; the boxes were drawn from two detectors' consensus and
checked by eye, see docs/anonymize.md): Ultralytics' ``bus.jpg`` and ``zidane.jpg``, scikit-image's
``astronaut.png`` and ``camera.png``, Matplotlib's ``grace_hopper.jpg``, InsightFace 2.1's ``t1.jpg``
(six faces) and ``Tom_Hanks_54745.png``; photographs without faces (scikit-learn's ``china.jpg`` and
``flower.jpg``, scikit-image's ``coffee.png``, ``chelsea.png`` and ``rocket.jpg``, InsightFace's
masks) as negatives.

From them, the variants a street dataset has, each with its faces' boxes carried through the
transform: originals; people pasted onto a 1920x1080 street backdrop with faces from 11 to 64 px
("crowds"); whole photos shrunk onto the backdrop; dark (exposure x0.25, gamma); rotated (+-20
degrees, 90 degrees); JPEG quality 25. ``build(dir)`` writes a YOLO-layout dataset (class 0
``face``; the labels are the ground truth, the pipeline under test does not read them unless told)
and returns the ground truth as ``{relative path: [[x1, y1, x2, y2], ...]}``.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from secure_data.anonymize.builtin import wheel_member

_INSIGHTFACE = ("insightface", "2.1", "insightface-2.1-py3-none-any.whl",
                "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399")


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # importable package, or "insightface" (fetched as a pinned wheel)
    member: str
    sha256: str
    faces: tuple[tuple[int, int, int, int], ...]


PHOTOS = (
    Photo("bus", "ultralytics", "assets/bus.jpg",
          "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63", ((113, 418, 155, 473), (270, 425, 308, 475))),
    Photo("zidane", "ultralytics", "assets/zidane.jpg",
          "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb", ((912, 103, 1052, 281), (559, 258, 667, 433))),
    Photo("astronaut", "skimage", "data/astronaut.png",
          "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", ((182, 58, 270, 178),)),
    Photo("camera", "skimage", "data/camera.png",
          "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a", ((200, 117, 258, 198),)),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", ((175, 122, 357, 338),)),
    Photo("t1", "insightface", "insightface/data/images/t1.jpg",
          "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
          ((56, 266, 167, 394), (744, 344, 847, 482), (464, 265, 572, 412), (1133, 266, 1231, 402),
           (905, 59, 1013, 201), (271, 150, 372, 267))),
    Photo("tom_hanks", "insightface", "insightface/data/images/Tom_Hanks_54745.png",
          "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", ((4, 1, 90, 118),)),
)
NEGATIVES = (
    Photo("china", "sklearn", "datasets/images/china.jpg", "", ()),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "", ()),
    Photo("coffee", "skimage", "data/coffee.png", "", ()),
    Photo("chelsea", "skimage", "data/chelsea.png", "", ()),
    Photo("rocket", "skimage", "data/rocket.jpg", "", ()),
    Photo("mask_white", "insightface", "insightface/data/images/mask_white.jpg",
          "3adee6ba6680d26197bbea95deb9d335252d01c2c51ead23e01af9784c310aa6", ()),
)
CROWD_FACE_PX = (11, 12, 14, 16, 18, 20, 24, 28, 32, 40, 48, 64)


def photo_bytes(photo: Photo, cache: Path) -> bytes:
    if photo.package == "insightface":
        return wheel_member(*_INSIGHTFACE, photo.member, photo.sha256, cache)
    import importlib

    module = importlib.import_module(photo.package)
    data = (Path(module.__file__).parent / photo.member).read_bytes()
    if photo.sha256 and hashlib.sha256(data).hexdigest() != photo.sha256:
        raise RuntimeError(f"{photo.package}/{photo.member} is not the pinned photograph (other package version?)")
    return data


def _decode(data: bytes):
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError("undecodable photograph")
    return img


def _backdrop(images: dict, rng, w: int = 1920, h: int = 1080):
    """A street-like 1920x1080 backdrop: a face-free photo, scaled to cover and cropped."""
    import cv2

    src = images[rng.choice(["china", "flower", "coffee", "rocket"])]
    s = max(w / src.shape[1], h / src.shape[0])
    big = cv2.resize(src, (math.ceil(src.shape[1] * s), math.ceil(src.shape[0] * s)), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return big[y0:y0 + h, x0:x0 + w].copy()


def _paste(canvas, patch, x: int, y: int) -> None:
    """Paste with a feathered border (no hard rectangle edge for a detector to key on)."""
    import cv2
    import numpy as np

    ph, pw = patch.shape[:2]
    mask = np.zeros((ph, pw), np.float32)
    b = max(1, min(ph, pw) // 8)
    mask[b:ph - b, b:pw - b] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), b / 2 + 0.5)[..., None]
    region = canvas[y:y + ph, x:x + pw].astype(np.float32)
    canvas[y:y + ph, x:x + pw] = (region * (1 - mask) + patch.astype(np.float32) * mask).round().astype(np.uint8)


def _crowd(images: dict, rng, n_faces: int):
    """People (head and shoulders around each known face) pasted at face widths of 11-64 px, no overlaps."""
    import cv2

    canvas = _backdrop(images, rng)
    boxes, taken = [], []
    heads = [(p, f) for p in PHOTOS for f in p.faces]
    for _ in range(n_faces * 20):
        if len(boxes) == n_faces:
            break
        photo, (fx1, fy1, fx2, fy2) = heads[rng.randrange(len(heads))]
        img = images[photo.name]
        fw, fh = fx2 - fx1, fy2 - fy1
        # Context: 0.8 face widths each side, 0.6 above, 1.2 below (shoulders), clipped to the photo.
        cx1, cy1 = max(0, int(fx1 - 0.8 * fw)), max(0, int(fy1 - 0.6 * fh))
        cx2, cy2 = min(img.shape[1], int(fx2 + 0.8 * fw)), min(img.shape[0], int(fy2 + 1.2 * fh))
        target = rng.choice(CROWD_FACE_PX)
        s = target / fw
        pw, ph = max(4, round((cx2 - cx1) * s)), max(4, round((cy2 - cy1) * s))
        if pw >= canvas.shape[1] or ph >= canvas.shape[0]:
            continue
        x, y = rng.randrange(0, canvas.shape[1] - pw), rng.randrange(canvas.shape[0] // 4, canvas.shape[0] - ph)
        if any(x < t[2] and x + pw > t[0] and y < t[3] and y + ph > t[1] for t in taken):
            continue
        patch = cv2.resize(img[cy1:cy2, cx1:cx2], (pw, ph), interpolation=cv2.INTER_AREA)
        _paste(canvas, patch, x, y)
        taken.append((x, y, x + pw, y + ph))
        boxes.append([x + (fx1 - cx1) * s, y + (fy1 - cy1) * s, x + (fx2 - cx1) * s, y + (fy2 - cy1) * s])
    return canvas, boxes


def _shrunk(images: dict, rng, photo: Photo, face_px: int):
    """The whole photo shrunk so its median face is ``face_px`` wide, placed on the backdrop."""
    import cv2

    canvas = _backdrop(images, rng)
    img = images[photo.name]
    widths = sorted(f[2] - f[0] for f in photo.faces)
    s = min(face_px / widths[len(widths) // 2], 0.9 * canvas.shape[1] / img.shape[1], 0.9 * canvas.shape[0] / img.shape[0])
    small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))), interpolation=cv2.INTER_AREA)
    x = rng.randrange(0, canvas.shape[1] - small.shape[1])
    y = rng.randrange(0, canvas.shape[0] - small.shape[0])
    canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
    return canvas, [[x + a * s, y + b * s, x + c * s, y + d * s] for a, b, c, d in photo.faces]


def _dark(img, boxes):
    import numpy as np

    out = (255.0 * (img.astype(np.float32) / 255.0) ** 1.6 * 0.35).round().clip(0, 255).astype(np.uint8)
    return out, [list(b) for b in boxes]


def _rotated(img, boxes, angle: float):
    """Rotate about the centre, canvas grown to keep every pixel; boxes = hull of the rotated corners."""
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    new = []
    for x1, y1, x2, y2 in boxes:
        # The face is roughly an ellipse inscribed in its box: rotate the ellipse's extreme points.
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        t = np.linspace(0, 2 * np.pi, 32)
        pts = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t), np.ones_like(t)], 1) @ m.T
        new.append([float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())])
    return out, new


def _encode(img, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("encode failed")
    return buf.tobytes()


def variants(cache: Path, seed: int = 12) -> list[tuple[str, bytes, list[list[float]]]]:
    """``(name, jpeg bytes, face boxes)`` for every image of the set (deterministic for a seed)."""
    import random

    rng = random.Random(seed)
    images = {p.name: _decode(photo_bytes(p, cache)) for p in PHOTOS + NEGATIVES}
    out: list[tuple[str, bytes, list[list[float]]]] = []
    for p in PHOTOS:
        out.append((f"orig_{p.name}", _encode(images[p.name], 92), [list(f) for f in p.faces]))
    for p in NEGATIVES:
        out.append((f"neg_{p.name}", _encode(images[p.name], 92), []))
    for k in range(8):
        img, boxes = _crowd(images, rng, 10 + 2 * k)
        out.append((f"crowd_{k}", _encode(img, 90), boxes))
    for p, px in (("t1", 14), ("t1", 22), ("bus", 16), ("zidane", 20), ("t1", 32), ("zidane", 12)):
        photo = next(x for x in PHOTOS if x.name == p)
        img, boxes = _shrunk(images, rng, photo, px)
        out.append((f"small_{p}_{px}px", _encode(img, 90), boxes))
    for p in ("bus", "zidane", "t1", "astronaut"):
        photo = next(x for x in PHOTOS if x.name == p)
        img, boxes = _dark(images[p], photo.faces)
        out.append((f"dark_{p}", _encode(img, 90), boxes))
    img, boxes = _crowd(images, rng, 14)
    img, boxes = _dark(img, boxes)
    out.append(("dark_crowd", _encode(img, 90), boxes))
    for p, angle in (("t1", 20), ("zidane", -20), ("grace_hopper", 90), ("bus", -15)):
        photo = next(x for x in PHOTOS if x.name == p)
        img, boxes = _rotated(images[p], photo.faces, angle)
        out.append((f"rot{angle}_{p}", _encode(img, 90), boxes))
    for p in ("t1", "bus", "zidane"):
        photo = next(x for x in PHOTOS if x.name == p)
        out.append((f"q25_{p}", _encode(images[p], 25), [list(f) for f in photo.faces]))
    img, boxes = _crowd(images, rng, 14)
    out.append(("q25_crowd", _encode(img, 25), boxes))
    return out


def build(root: str | os.PathLike, cache: str | os.PathLike, seed: int = 12) -> dict[str, list[list[float]]]:
    """Write the set as a YOLO dataset under ``root`` (all in split ``train``); return the ground truth."""
    import cv2
    import numpy as np

    root = Path(root)
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    truth: dict[str, list[list[float]]] = {}
    for name, data, boxes in variants(Path(cache), seed):
        rel = f"images/train/{name}.jpg"
        (root / rel).write_bytes(data)
        h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        lines = [f"0 {(a + c) / 2 / w:.6f} {(b + d) / 2 / h:.6f} {(c - a) / w:.6f} {(d - b) / h:.6f}"
                 for a, b, c, d in boxes]
        (root / "labels" / "train" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
        truth[rel] = [[round(v, 1) for v in b] for b in boxes]
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames:\n  0: face\n")
    return truth


def selected(names: tuple[str, ...], cache: str | os.PathLike, seed: int = 12):
    """``(name, jpeg bytes, face boxes, (h, w))`` for the named variants only."""
    import cv2
    import numpy as np

    out = []
    for name, data, boxes in variants(Path(cache), seed):
        if name in names:
            h, w = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE).shape
            out.append((name, data, boxes, (h, w)))
    return out
