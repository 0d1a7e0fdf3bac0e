"""One read per image: every pixel-level input of the poisoning checks from one verified read and one decode.

Each image's bytes are read through ``verified_read`` (hash-checked against the manifest) once and
decoded once (``decode_bgr``); from that one decoded image the pass takes

* the per-sample features (:func:`secure_data.poisoning.features.extract_features`: hashes, block
  codes, layout vectors, box fits against the class templates);
* the grey thumbnail near-duplicate pairs are verified on (kept PNG-compressed in an unnamed temporary
  file: only images in a candidate pair are looked at again, and never re-read from the dataset);
* with the pinned domain model: its detections (presence checks) and the backbone box features
  (spectral signatures), batch by batch, while the images are in memory.

The class templates are medians over a seeded sample of boxes (``template_sample`` per class), and the
fits need them. The images of that sample therefore go first; their boxes' search regions (grey, 20 kB
per box) are kept until the templates exist, then fitted. Memory stays bounded by the template sample
and one batch of images.

An image that cannot be read, fails its hash or does not decode gets ``SampleFeatures.error`` and is
reported ``unreadable`` by the stage; no later step reads it.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from secure_data.dataset.layout import UnsafePathError
from secure_data.dataset.manifest import IntegrityError, verified_read
from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.features import (
    SampleFeatures,
    UndecodableImage,
    analysis_gray,
    build_templates,
    decode_bgr,
    extract_features,
    fit_box,
    template_frames,
)
from secure_data.poisoning.samples import Sample

_CHUNK = 256  # images per batch without the model (with it: 4 model batches)


class _BlobFile:
    """Byte strings by sample index in an unnamed temporary file (no name on disk: gone when closed or
    when the process ends)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._where: dict[int, tuple[int, int]] = {}

    def _put(self, index: int, data: bytes) -> None:
        self._file.seek(0, 2)
        self._where[index] = (self._file.tell(), len(data))
        self._file.write(data)

    def _get(self, index: int) -> bytes | None:
        if index not in self._where:
            return None
        offset, size = self._where[index]
        self._file.seek(offset)
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()


class GrayStore(_BlobFile):
    """Verification thumbnails by sample index, PNG (lossless)."""

    def put(self, index: int, png: bytes) -> None:
        self._put(index, png)

    def get(self, index: int):
        import cv2
        import numpy as np

        data = self._get(index)
        return None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


class MapStore(_BlobFile):
    """Search maps (int8 arrays) by sample index, raw."""

    def __init__(self) -> None:
        super().__init__()
        self._shapes: dict[int, tuple[int, ...]] = {}

    def put(self, index: int, arr) -> None:
        self._shapes[index] = tuple(arr.shape)
        self._put(index, arr.tobytes())

    def get(self, index: int):
        import numpy as np

        data = self._get(index)
        return None if data is None else np.frombuffer(data, np.int8).reshape(self._shapes[index])


class _Subset:
    """A store seen through a list of indices (the checks number the readable samples 0..n-1)."""

    def __init__(self, store: MapStore, indices: Sequence[int]) -> None:
        self._store, self._indices = store, list(indices)

    def get(self, index: int):
        return self._store.get(self._indices[index])


@dataclass
class _Item:
    """What one worker returns for one sample."""

    features: SampleFeatures
    gray_png: bytes | None = None
    frames: list = field(default_factory=list)  # (cls, template frame): template-sample images only
    regions: dict = field(default_factory=dict)  # box index -> fit search region: template-sample images only
    image: Any = None  # the decoded image, when the model needs it
    search_map: Any = None  # int8 (h, w, 3): trigger search (search.py)


def _one(job: tuple[str, Sample, PoisoningConfig, Mapping[int, Any], bool, bool]) -> _Item:
    import cv2

    from secure_data.poisoning.duplicates import verification_gray

    root, sample, config, templates, template_phase, want_image = job
    try:
        data = verified_read(root, sample.image)
    except IntegrityError as exc:
        return _Item(SampleFeatures(key=sample.key, error=f"integrity: {exc}"))
    except (OSError, UnsafePathError) as exc:
        return _Item(SampleFeatures(key=sample.key, error=f"unreadable: {type(exc).__name__}: {exc}"))
    try:
        img = decode_bgr(data)
    except UndecodableImage as exc:
        return _Item(SampleFeatures(key=sample.key, error=str(exc)))
    analysis = analysis_gray(img, config.analysis_max_side)
    regions: dict[int, Any] = {}
    feats = extract_features(sample.key, img, sample.boxes, config, templates, analysis=analysis,
                             regions=regions if template_phase else None)
    ok, png = cv2.imencode(".png", verification_gray(analysis[0]))
    smap = None
    if config.maps_needed:
        from secure_data.poisoning.search import search_map

        smap = search_map(img, config, (analysis[0].shape[1], analysis[0].shape[0]))
    return _Item(
        features=feats, gray_png=png.tobytes() if ok else None, search_map=smap,
        frames=template_frames(img, sample.boxes, config) if template_phase else [],
        regions=regions, image=img if want_image else None,
    )


@dataclass
class PassResult:
    features: list[SampleFeatures]  # one per sample, in the samples' order
    grays: GrayStore  # verification thumbnails by sample index (readable samples only)
    seen: dict[str, tuple[int, int, list]]  # with the model: key -> (width, height, detections)
    box_features: tuple | None  # with the model: (refs, X, layers) in sample order
    maps: MapStore | None = None  # trigger search maps by sample index (None: search off)

    def load_gray(self, index: int):
        return self.grays.get(index)

    def search_maps(self, indices: Sequence[int]) -> _Subset | None:
        return _Subset(self.maps, indices) if self.maps is not None else None

    def close(self) -> None:
        self.grays.close()
        if self.maps is not None:
            self.maps.close()


class _Model:
    """The pinned domain model's two uses on each batch of decoded images."""

    def __init__(self, config: PoisoningConfig, names: Mapping[int, str]) -> None:
        from secure_data.poisoning.presence import PresenceDetector
        from secure_data.poisoning.spectral import Backbone

        self.detector = PresenceDetector(config, names)
        self.backbone = Backbone(config)
        self.seen: dict[str, tuple[int, int, list]] = {}
        self.rows: dict[int, tuple[list, Any]] = {}

    def feed(self, batch: Sequence[tuple[int, Sample, Any]]) -> None:
        from secure_data.poisoning.spectral import BoxRef, box_pixels

        images = [img for _, _, img in batch]
        for (_, s, img), dets in zip(batch, self.detector.detect(images), strict=True):
            self.seen[s.key] = (img.shape[1], img.shape[0], dets)
        boxed = [(i, s, img) for i, s, img in batch if s.boxes]
        if boxed:
            feats = self.backbone.box_features([img for _, _, img in boxed],
                                               [box_pixels(s, img.shape[1], img.shape[0]) for _, s, img in boxed])
            for (i, s, _), rows in zip(boxed, feats, strict=True):
                self.rows[i] = ([BoxRef(s.key, j, int(b[0])) for j, b in enumerate(s.boxes)], rows)

    def box_features(self) -> tuple:
        import numpy as np

        refs: list = []
        rows: list = []
        for i in sorted(self.rows):
            refs.extend(self.rows[i][0])
            rows.append(self.rows[i][1])
        x = np.concatenate(rows, 0) if rows else np.zeros((0, 0), np.float32)
        return refs, x, self.backbone.layers

    def close(self) -> None:
        self.backbone.close()


def image_pass(
    root: str, samples: Sequence[Sample], config: PoisoningConfig, template_order: Sequence[int],
    *, names: Mapping[int, str] | None = None,
) -> PassResult:
    """Read, verify and decode every sample once; see the module docstring.

    ``template_order``: indices of the samples whose boxes build the class templates, in the order
    their boxes are taken. ``workers > 1`` fans the reading and per-sample features out over spawned
    processes; the model (``config.backbone_enabled``) runs in this process on the decoded batches.
    """
    model = _Model(config, names or {}) if config.backbone_enabled else None
    feats: list[SampleFeatures | None] = [None] * len(samples)
    grays = GrayStore()
    maps = MapStore() if config.maps_needed else None
    chunk = max(1, config.backbone_batch) * 4 if model else _CHUNK
    pool = None
    try:
        if config.workers > 1 and len(samples) >= 2 * config.workers:
            import multiprocessing

            pool = ProcessPoolExecutor(max_workers=config.workers, mp_context=multiprocessing.get_context("spawn"))

        def run(indices: Sequence[int], templates: Mapping[int, Any], template_phase: bool,
                keep: Callable[[int, _Item], None]) -> None:
            for start in range(0, len(indices), chunk):
                part = indices[start:start + chunk]
                jobs = [(root, samples[i], config, templates, template_phase, model is not None) for i in part]
                items = list(pool.map(_one, jobs)) if pool else [_one(j) for j in jobs]
                batch = []
                for i, item in zip(part, items, strict=True):
                    feats[i] = item.features
                    if item.gray_png is not None:
                        grays.put(i, item.gray_png)
                    if item.search_map is not None and maps is not None:
                        maps.put(i, item.search_map)
                    if item.image is not None:
                        batch.append((i, samples[i], item.image))
                    keep(i, item)
                if model and batch:
                    model.feed(batch)

        # 1. the template sample: frames for the templates, search regions kept for the fits
        frames: dict[int, list] = {}
        regions: dict[int, dict] = {}

        def keep_template(i: int, item: _Item) -> None:
            taken: dict[int, int] = {}
            for cls, frame in item.frames:
                if len(frames.setdefault(cls, [])) < config.template_sample \
                        and taken.get(cls, 0) < config.stats_boxes_per_image:
                    taken[cls] = taken.get(cls, 0) + 1
                    frames[cls].append(frame)
            if item.features.ok:
                regions[i] = item.regions

        first = list(dict.fromkeys(template_order))
        run(first, {}, True, keep_template)
        templates = build_templates(frames, config.min_class_boxes)
        for i, by_box in regions.items():
            f = feats[i]
            boxes = samples[i].boxes
            fits = [fit for j in sorted(by_box) if (fit := fit_box(by_box[j], j, boxes[j], templates, config))]
            feats[i] = dataclasses.replace(f, fits=tuple(fits))
        regions.clear()

        # 2. everything else, fitted as it goes
        done = set(first)
        run([i for i in range(len(samples)) if i not in done], templates, False, lambda i, item: None)
        result = PassResult(
            features=[f for f in feats if f is not None], grays=grays,
            seen=dict(model.seen) if model else {}, box_features=model.box_features() if model else None,
            maps=maps,
        )
    except BaseException:
        grays.close()
        if maps is not None:
            maps.close()
        raise
    finally:
        if pool is not None:
            pool.shutdown()
        if model is not None:
            model.close()
    return result
