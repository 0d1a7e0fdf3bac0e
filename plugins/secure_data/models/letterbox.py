"""Letterboxing decoded images into batches, as Ultralytics does (long side fitted, centred on grey).

Shared by the anonymize detector and the poisoning stage's backbone features: images of the same size
are resized together and padded onto the same canvas, so a batch is one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LETTERBOX_FILL = 114  # Ultralytics' padding grey


@dataclass(frozen=True)
class Letterbox:
    ratio_x: float
    ratio_y: float
    pad_x: float
    pad_y: float


def letterbox_shape(h: int, w: int, size: int, stride: int, square: bool) -> tuple[int, int, int, int]:
    """(canvas_h, canvas_w, new_h, new_w): fit the long side to ``size``, pad to ``size`` or the stride."""
    r = min(size / h, size / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    if square:
        return size, size, nh, nw
    return math.ceil(nh / stride) * stride, math.ceil(nw / stride) * stride, nh, nw


def letterbox_group(images: Sequence[torch.Tensor], canvas: tuple[int, int], new: tuple[int, int],
                    dtype, fill: float) -> tuple[torch.Tensor, Letterbox]:
    """Resize same-size uint8 CHW images together and centre them on a ``fill`` canvas."""
    import torch
    import torch.nn.functional as F

    h, w = int(images[0].shape[1]), int(images[0].shape[2])
    nh, nw = new
    if images[0].device.type == "cpu":
        import cv2
        import numpy as np

        # OpenCV's INTER_LINEAR (what Ultralytics itself uses) on the HWC pixels: several times faster
        # on the CPU than stacking full-size CHW tensors first.
        hwc = [np.ascontiguousarray(img.permute(1, 2, 0).numpy()) for img in images]
        if (nh, nw) != (h, w):
            hwc = [cv2.resize(a, (nw, nh), interpolation=cv2.INTER_LINEAR) for a in hwc]
        batch = torch.from_numpy(np.stack(hwc)).permute(0, 3, 1, 2)
    else:
        batch = torch.stack(list(images))
        if (nh, nw) != (h, w):
            batch = F.interpolate(batch.to(dtype), size=(nh, nw), mode="bilinear", align_corners=False)
    ch, cw = canvas
    top, left = (ch - nh) // 2, (cw - nw) // 2
    out = torch.full((batch.shape[0], 3, ch, cw), fill, dtype=dtype, device=batch.device)
    out[:, :, top:top + nh, left:left + nw] = batch.to(dtype)
    return out, Letterbox(ratio_x=nw / w, ratio_y=nh / h, pad_x=left, pad_y=top)


def group_by_canvas(images, size: int, stride: int, square: bool) -> dict[tuple, list[int]]:
    """Image indices grouped by (original size, canvas, resized size): each group is one letterbox batch."""
    groups: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        h, w = int(img.shape[1]), int(img.shape[2])
        ch, cw, nh, nw = letterbox_shape(h, w, size, stride, square)
        groups.setdefault(((h, w), (ch, cw), (nh, nw)), []).append(i)
    return groups


def unletterbox(xyxy, lb: Letterbox, h: int, w: int):
    x = (xyxy[:, [0, 2]] - lb.pad_x) / lb.ratio_x
    y = (xyxy[:, [1, 3]] - lb.pad_y) / lb.ratio_y
    return x.clamp(0, w), y.clamp(0, h)
