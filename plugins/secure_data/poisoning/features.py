"""Per-sample features: everything the checks need from the pixels, computed from one verified read.

Extraction is a pure function of (image bytes, boxes, config, class templates), so it
runs per sample, per shard, in any number of processes; the checks only ever merge
these small records. Per image it yields:

* the 64-bit pHash of the image and of its mirror (near-duplicates, leakage), and the
  low-frequency DCT values it thresholds (layout vectors: leakage beyond the pHash radius);
* block hashes: a JPEG-tolerant ternary code of every high-contrast 8x8 block at
  stride 1 (trigger patches), with positions;
* per box, how well the box content fits the class templates (shifted boxes,
  flipped classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.phash import layout_pair, phash_pair
from secure_data.poisoning.samples import BoxTuple

TEMPLATE_MARGIN = 0.5  # the template frame shows the box plus half a box of context on each side


class UndecodableImage(ValueError):
    """Bytes that match the manifest but do not decode as an image."""


@dataclass(frozen=True)
class BoxFit:
    """How one labelled box fits the appearance templates (normalised correlation of orientation fields)."""

    index: int  # position of the box in the label file
    cls: int
    own: float  # own-class template at the labelled position
    best: float  # own-class template, best position within the search window
    dx: float  # offset of that best position, in box widths / heights
    dy: float
    other_cls: int | None = None  # the other class whose template fits best at the labelled position
    other: float | None = None
    other_at_best: float | None = None  # best other-class fit at the best own-class position

    @property
    def offset(self) -> float:
        return (self.dx * self.dx + self.dy * self.dy) ** 0.5


@dataclass(frozen=True)
class SampleFeatures:
    key: str
    phash: int = 0
    phash_mirror: int = 0
    layout: Any = None  # float32[63]: unit low-frequency DCT vector (leakage nearest-neighbour proposals)
    layout_mirror: Any = None
    scale: float = 1.0  # analysis pixels per image pixel (block hashes are at analysis resolution)
    analysis_size: tuple[int, int] = (0, 0)  # (width, height) at analysis resolution
    codes: Any = None  # int64 array: ternary block codes
    xs: Any = None  # int32 arrays: top-left corner of each block, analysis pixels
    ys: Any = None
    fits: tuple[BoxFit, ...] = ()
    chroma: Any = None  # blended.ChromaCodes: colour (Lab a*) block codes for blended_patch
    error: str | None = None  # set when the image could not be read or decoded

    @property
    def ok(self) -> bool:
        return self.error is None


def decode_bgr(data: bytes):
    """Decode like Ultralytics does (cv2.imdecode, IMREAD_COLOR: EXIF orientation applied)."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise UndecodableImage("OpenCV could not decode the image")
    return img


# ---------------------------------------------------------------- block hashes

def _ternary_weights(n: int):
    import numpy as np

    return (3 ** np.arange(n, dtype=np.int64)).astype(np.int64)


def block_codes(gray, *, block_px: int, min_contrast: float):
    """Ternary codes of every ``block_px`` square block (stride 1) whose contrast is high enough.

    The block is averaged into 4x4 cells (averaging suppresses JPEG noise); each cell
    becomes -1/0/+1 by comparing it with the block mean +- a quarter of the block's
    range. Thresholds relative to the block's own statistics make the code independent
    of brightness and contrast; the dead zone keeps it stable under re-encoding.
    Returns (codes int64, xs, ys) for blocks with range >= ``min_contrast``.
    """
    import cv2
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    cell = block_px // 4
    g = gray.astype(np.float32)
    if g.shape[0] < block_px or g.shape[1] < block_px:
        empty = np.empty(0, np.int64)
        return empty, empty.astype(np.int32), empty.astype(np.int32)
    # pooled[y, x] = mean of the cell x cell square whose top-left is (x, y)
    pooled = cv2.boxFilter(g, -1, (cell, cell), anchor=(0, 0), normalize=True, borderType=cv2.BORDER_REPLICATE)
    span = 3 * cell + 1
    win = sliding_window_view(pooled, (span, span))[: g.shape[0] - block_px + 1, : g.shape[1] - block_px + 1]
    win = win[:, :, ::cell, ::cell]  # (H', W', 4, 4): the 16 cells of each block
    hi = win.max(axis=(2, 3))
    lo = win.min(axis=(2, 3))
    contrast = hi - lo
    ys, xs = np.nonzero(contrast >= min_contrast)
    if len(ys) == 0:
        empty = np.empty(0, np.int64)
        return empty, empty.astype(np.int32), empty.astype(np.int32)
    sel = win[ys, xs].reshape(len(ys), 16)
    mean = sel.mean(axis=1, keepdims=True)
    tau = 0.25 * contrast[ys, xs][:, None]
    trit = np.where(sel > mean + tau, 2, np.where(sel < mean - tau, 0, 1)).astype(np.int64)
    codes = trit @ _ternary_weights(16)
    return codes, xs.astype(np.int32), ys.astype(np.int32)


def analysis_gray(img, max_side: int):
    """Grey image downscaled (never upscaled) to ``max_side``; returns (gray, scale)."""
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return gray, scale


# ---------------------------------------------------------------- box frames and templates

def _frame(img, box: BoxTuple, *, box_px: int, margin: float):
    """Gradient orientation field of the box plus ``margin`` box sizes of context, box resampled to box_px.

    Two channels, (gx^2 - gy^2, 2 gx gy) / |g|: the doubled-angle orientation weighted
    by edge strength. Doubling the angle makes it polarity-free (a face may be darker
    or lighter than its background; a plate's glyphs dark on light or the reverse),
    which is what lets one template per class fit every instance. Plain edge
    magnitude was tried first: it lets any strong edge nearby (a plate next to a
    face) out-score the object itself.
    """
    gray = frame_gray(img, box, box_px=box_px, margin=margin)
    return None if gray is None else orientation_field(gray)


def frame_gray(img, box: BoxTuple, *, box_px: int, margin: float):
    """The box plus ``margin`` box sizes of context, grey float32, resampled so the box is box_px wide:
    the part of :func:`_frame` that needs the image (20 kB per box at the fit search size)."""
    import cv2
    import numpy as np

    h_img, w_img = img.shape[:2]
    _, cx, cy, bw, bh = box
    side = int(round(box_px * (1 + 2 * margin)))
    ex, ey = bw * (1 + 2 * margin) * w_img, bh * (1 + 2 * margin) * h_img
    x1, y1 = cx * w_img - ex / 2, cy * h_img - ey / 2
    ix1, iy1 = int(np.floor(x1)), int(np.floor(y1))
    ix2, iy2 = int(np.ceil(x1 + ex)), int(np.ceil(y1 + ey))
    pad = max(0, -ix1, -iy1, ix2 - w_img, iy2 - h_img)
    src = img
    if pad:
        # Reflect at the border so a box near the edge is not judged by an artificial black band.
        pad = min(pad, 4 * max(h_img, w_img))
        src = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    crop = src[iy1 + pad: iy2 + pad, ix1 + pad: ix2 + pad]
    if crop.size == 0:
        return None
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)


def orientation_field(gray):
    """Doubled-angle orientation field of a :func:`frame_gray` (see :func:`_frame`)."""
    import cv2
    import numpy as np

    gray = cv2.GaussianBlur(gray, (3, 3), 0)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    mag = np.hypot(gx, gy) + 1e-3
    return np.dstack([(gx * gx - gy * gy) / mag, 2 * gx * gy / mag]).astype(np.float32)


def _box_ok(box: BoxTuple, width: int, height: int) -> bool:
    _, _, _, bw, bh = box
    return bw * width >= 4 and bh * height >= 4


def template_frames(img, boxes: Sequence[BoxTuple], config: PoisoningConfig) -> list[tuple[int, Any]]:
    """(cls, frame) for every usable box of one decoded image: the raw material of the class templates."""
    h, w = img.shape[:2]
    out = []
    for box in boxes:
        if not _box_ok(box, w, h):
            continue
        frame = _frame(img, box, box_px=config.fit_box_px, margin=TEMPLATE_MARGIN)
        if frame is not None:
            out.append((box[0], frame))
    return out


def build_templates(frames_by_class: Mapping[int, Sequence[Any]], min_boxes: int) -> dict[int, Any]:
    """Per-class median orientation field. The median tolerates up to half the boxes of a class being wrong."""
    import numpy as np

    return {
        cls: np.median(np.stack(frames), axis=0).astype(np.float32)
        for cls, frames in frames_by_class.items()
        if len(frames) >= min_boxes
    }


def fit_region_gray(img, box: BoxTuple, config: PoisoningConfig):
    """The grey search region :func:`fit_box` correlates the templates over (None if empty)."""
    return frame_gray(img, box, box_px=config.fit_box_px, margin=TEMPLATE_MARGIN + config.fit_search)


def fit_box(region_gray, index: int, box: BoxTuple, templates: Mapping[int, Any], config: PoisoningConfig) -> BoxFit | None:
    """How box ``index`` fits the class templates, from its :func:`fit_region_gray`."""
    import cv2

    cls = box[0]
    template = templates.get(cls)
    if template is None or region_gray is None or float(template.std()) == 0.0:
        return None
    region = orientation_field(region_gray)
    response = cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED)
    centre = response.shape[0] // 2
    own = float(response[centre, centre])
    _, best, _, (bx, by) = cv2.minMaxLoc(response)
    t = template.shape[0]
    here = region[centre: centre + t, centre: centre + t]
    there = region[by: by + t, bx: bx + t]
    other_cls, other, other_at_best = None, None, None
    for ocls, otpl in templates.items():
        if ocls == cls:
            continue
        score = _clean(float(cv2.matchTemplate(here, otpl, cv2.TM_CCOEFF_NORMED)[0, 0]))
        if other is None or score > other:
            other_cls, other = ocls, score
        # Is what the box would move onto really this class, or an object of another class?
        at_best = _clean(float(cv2.matchTemplate(there, otpl, cv2.TM_CCOEFF_NORMED)[0, 0]))
        other_at_best = at_best if other_at_best is None else max(other_at_best, at_best)
    step = config.fit_box_px
    return BoxFit(
        index=index, cls=cls, own=_clean(own), best=_clean(float(best)),
        dx=(bx - centre) / step, dy=(by - centre) / step, other_cls=other_cls, other=other,
        other_at_best=other_at_best,
    )


def _clean(x: float) -> float:
    # A flat region gives NaN correlation; treat as no fit at all.
    return 0.0 if x != x else round(x, 4)


# ---------------------------------------------------------------- the per-sample entry point

def extract_features(
    key: str, data: Any, boxes: Sequence[BoxTuple], config: PoisoningConfig,
    templates: Mapping[int, Any], *, analysis: tuple[Any, float] | None = None,
    regions: dict[int, Any] | None = None,
) -> SampleFeatures:
    """All per-sample features from verified bytes or the image they decode to (``decode_bgr``).
    Never raises for bad pixels: sets ``error``.

    ``analysis``: the image's :func:`analysis_gray` when the caller already has it. ``regions``: if
    given, filled with each usable box's fit search region (:func:`fit_region_gray`), so that fits
    against templates built later need no second decode (:func:`fit_box`).
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            img = decode_bgr(bytes(data))
        except UndecodableImage as exc:
            return SampleFeatures(key=key, error=str(exc))
    else:
        img = data
    gray, scale = analysis or analysis_gray(img, config.analysis_max_side)
    ph, ph_mirror = phash_pair(gray)
    layout, layout_mirror = layout_pair(gray)
    codes, xs, ys = block_codes(gray, block_px=config.block_px, min_contrast=config.block_min_contrast)
    h, w = img.shape[:2]
    fits = []
    for i, box in enumerate(boxes):
        if _box_ok(box, w, h):
            region = fit_region_gray(img, box, config)
            if regions is not None:
                regions[i] = region
            fit = fit_box(region, i, box, templates, config)
            if fit is not None:
                fits.append(fit)
    from secure_data.poisoning.blended import chroma_codes
    chroma = chroma_codes(img, boxes, config, (gray.shape[1], gray.shape[0])) if config.blend_min_matches > 0 else None
    return SampleFeatures(
        key=key, phash=ph, phash_mirror=ph_mirror, layout=layout, layout_mirror=layout_mirror, scale=scale, analysis_size=(gray.shape[1], gray.shape[0]),
        codes=codes, xs=xs, ys=ys, fits=tuple(fits),
        chroma=chroma,
    )
