"""Configuration of the poisoning stage: one policy and its thresholds per check.

A policy says what happens to the samples a finding names:

* ``"warn"``       the finding is recorded, nothing else changes;
* ``"quarantine"`` the named samples (image and label) are copied to the run's
                   quarantine with the finding as reason and marked quarantined;
* ``"fail"``       as ``warn``, and the stage raises after writing its outputs.

Every threshold is a plain number with a default that held a clean false-positive
rate under 1 % on the seeded benchmark (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

FAIL = "fail"
WARN = "warn"
QUARANTINE = "quarantine"
ACTIONS = (FAIL, WARN, QUARANTINE)

# The checks, in the order they run. Their names are the finding codes.
CHECKS = (
    "duplicate",  # exact / near-duplicate copies with the same labels in one split
    "duplicate_label_conflict",  # exact / near-duplicates whose labels disagree: the label-flip signature
    "split_leakage",  # near-duplicates across train / val / test
    "box_outlier",  # per-class robust outliers in box size, aspect ratio, boxes per image
    "box_misaligned",  # a box that fits its class far better somewhere else: shifted labels
    "class_confusion",  # a box whose content fits another class's appearance better: flipped class
    "trigger_patch",  # a small patch recurring in label-anomalous images: BadNets-style triggers
    "distribution_drift",  # class balance / box statistics differ from a reference manifest
    "unreadable",  # image bytes that no longer match the manifest or do not decode
    "feature_outlier",  # optional (backbone_model): spectral-signature outliers of YOLO backbone features
    "unlabelled_object",  # optional (backbone_model): a confident detection no label covers (object disappearance)
    "phantom_box",  # optional (backbone_model): a labelled box where the model sees nothing (object generation)
    "detector_class_conflict",  # optional (backbone_model): the model confidently sees another class
    "repeated_patch",  # one small picture pasted into many unrelated images, wherever it sits (any labels)
    "blended_patch",  # one picture, opaque or blended, at varying positions: colour block codes, rigid geometry
    "trigger_search",  # a picture flagged images share, searched for in every image (template scan)
)

# Checks that run only with a backbone_model (left out of to_dict() while it is off, see below).
BACKBONE_CHECKS = ("feature_outlier", "unlabelled_object", "phantom_box", "detector_class_conflict")

# Fields of the optional backbone check. While it is off (no backbone_model), those at their defaults
# (and its default policy) are left out of to_dict(), which goes into the stage manifest's header:
# manifests of runs without the check stay byte-identical to those written before it existed.
BACKBONE_FIELDS = (
    "backbone_model", "backbone_model_sha256", "backbone_device", "backbone_imgsz", "backbone_batch",
    "backbone_layers", "feature_outlier_z", "feature_min_class_boxes",
    "presence_conf", "presence_low_conf", "presence_iou", "presence_phantom_max_fit",
)

DEFAULT_ACTIONS: Mapping[str, str] = {
    "duplicate": WARN,
    "duplicate_label_conflict": QUARANTINE,
    "split_leakage": QUARANTINE,
    "box_outlier": WARN,
    "box_misaligned": QUARANTINE,
    "class_confusion": QUARANTINE,
    "trigger_patch": QUARANTINE,
    "distribution_drift": WARN,
    "unreadable": QUARANTINE,
    "feature_outlier": WARN,
    "unlabelled_object": QUARANTINE,
    "phantom_box": QUARANTINE,
    "detector_class_conflict": QUARANTINE,
    "repeated_patch": QUARANTINE,
    # warn: beside an opaque-trigger attack of the test suite it also named 3 clean images (chance links)
    "blended_patch": WARN,
    "trigger_search": QUARANTINE,
}


# Group keys for DAG params: one policy for several related checks.
POLICY_GROUPS: Mapping[str, tuple[str, ...]] = {
    "duplicates_policy": ("duplicate_label_conflict",),
    "leakage_policy": ("split_leakage",),
    "trigger_policy": ("trigger_patch",),
    "outlier_policy": ("box_outlier", "box_misaligned", "class_confusion"),
    "drift_policy": ("distribution_drift",),
    "backbone_policy": ("feature_outlier",),
    "presence_policy": ("unlabelled_object", "phantom_box", "detector_class_conflict"),
    "patch_policy": ("repeated_patch", "blended_patch", "trigger_search"),
}


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """Template-rendered strings -> the type of the field's default."""
    if isinstance(default, tuple):  # a list of ints: "16,19" (rendered), "[16, 19]" or a native list
        items = raw.strip().strip("[]()").split(",") if isinstance(raw, str) else raw
        try:
            return tuple(int(str(v).strip()) for v in items if str(v).strip())
        except (TypeError, ValueError):
            raise ValueError(f"poisoning config {name}={raw!r}: expected a list of integers") from None
    if not isinstance(raw, str) or isinstance(default, str):
        return raw
    text = raw.strip()
    try:
        if isinstance(default, bool):
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ValueError(f"poisoning config {name}={raw!r}: expected {type(default).__name__}") from None
    return raw


def _check_action(name: str, action: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"policy for {name!r} must be one of {ACTIONS}, not {action!r}")
    return action


@dataclass(frozen=True)
class PoisoningConfig:
    """All knobs of the stage. Build with :meth:`from_dict` from operator/DAG input."""

    policies: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))

    # near-duplicates (64-bit DCT pHash)
    near_dup_radius: int = 8  # Hamming bits; re-encodes/resizes/crops sit at 0-6, unrelated images ~32
    match_mirrored: bool = True  # also pair an image with the horizontal mirror of another
    dup_min_inliers: int = 40  # ORB/RANSAC inliers that confirm a pHash candidate (copies: 70+, others: <25)
    # ... or, where ORB finds too little texture, this zero-mean correlation of 64x64 thumbnails after the
    # best small shift (only where an image has < 100 ORB corners;
    # copies: 0.97+, while flat-background pHash neighbours that are not copies reach 0.94-0.97)
    dup_min_correlation: float = 0.97
    # leakage beyond the pHash radius: each val/test image's nearest earlier-split images by layout cosine
    # (crops, shifts and colour shifts land 9-18 pHash bits away but stay the nearest neighbour), verified
    # like any candidate; an ORB-verified proposal must map frame onto frame (overlap of the two frames)
    leak_neighbours: int = 2  # 0: off
    leak_min_similarity: float = 0.5  # copies seen at 0.67-0.93, unrelated images' 99.9th percentile 0.70-0.77
    leak_min_overlap: float = 0.7  # a 5 %-per-side crop keeps 0.81
    box_match_iou: float = 0.5  # boxes of two near-duplicates are "the same box" above this IoU
    # ... and a box counts in that comparison only where the other picture shows the same thing under it:
    # best normalised correlation of the box region within 4 px after verification's transform (copies:
    # 0.75-1.0, a 5 %-per-side crop the lowest; overlapping crops of one photograph with different objects
    # drawn: <= 0.56). 0: every box counts.
    dup_box_min_agreement: float = 0.65

    # per-class robust box statistics
    outlier_z: float = 6.0  # modified z-score (0.6745 * |x - median| / MAD)
    min_class_boxes: int = 20  # fewer boxes than this (counted as they enter the statistics): no statistics
    # One image weighs at most this many boxes in a class's statistics and template: a label file with
    # 10,000 boxes must not become the reference it is judged by (its box count is checked on its own).
    stats_boxes_per_image: int = 4
    max_boxes_per_image: int = 1000  # more boxes in one image is a box_outlier whatever the statistics say

    # box content fit (class templates of the gradient-orientation layout in the box frame)
    fit_box_px: int = 16  # a box is mapped to fit_box_px x fit_box_px pixels
    fit_search: float = 1.25  # search +-fit_search box sizes around each box (shifts up to ~1 box)
    # A box is misaligned when its own-class template fits much better somewhere else. Clean boxes
    # fit best exactly where they are, or about a box away on a neighbouring object of their class
    # (gain up to 0.23 there on the generated data), so a short move needs less gain than a long one.
    misalign_gain: float = 0.4  # correlation gained by a move of more than misalign_near (shifted min 0.59)
    misalign_gain_near: float = 0.2  # ... by a move of misalign_offset..misalign_near (0.1-0.25 box shifts: min 0.24)
    misalign_near: float = 0.5  # box sizes
    misalign_offset: float = 0.08  # moves of one search step (1/16 box) or less are annotation jitter
    confusion_margin: float = 0.15  # another class's template fits better by this (clean max -0.15, flipped min 0.40)
    template_sample: int = 4000  # boxes per class used to build a template (a seeded sample)

    # trigger patches (recurring block hashes enriched in label-anomalous images)
    block_px: int = 8  # block side in analysis pixels; triggers smaller than ~block_px + 2 are missed
    block_min_contrast: float = 40.0  # grey-level range a block needs to be hashed
    analysis_max_side: int = 512  # images are downscaled to this long side before block hashing
    trigger_alpha: float = 0.01  # family-wise significance of the enrichment test (Bonferroni)
    trigger_min_purity: float = 0.5  # share of a code's documents that must be label-anomalous
    trigger_min_support: int = 3  # unrelated label-anomalous images a block hash must recur in
    trigger_min_hits: int = 3  # distinct pattern hashes an image needs within one compact region
    trigger_min_median_hits: int = 8  # a pattern's carriers must show this many hits (median): a dense patch
    trigger_hit_fraction: float = 0.25  # ... and at least this share of the seed carriers' median hits
    trigger_max_extent: int = 24  # analysis pixels: how far apart hits of one patch may be

    # drift against a reference manifest (Great Expectations KL divergence)
    drift_kl_threshold: float = 0.1
    drift_bins: int = 10

    # optional: backbone feature-space outliers (spectral signatures). Off while backbone_model is None.
    backbone_model: str | None = None  # an Ultralytics detection .pt trained on this data's domain
    backbone_model_sha256: str | None = None  # required with backbone_model: the file loads only if it matches
    backbone_device: str = "auto"  # "auto" (cuda:0 if visible, else cpu) | "cpu" | "cuda" | "cuda:N"
    backbone_imgsz: int = 0  # letterbox size; 0: the size the model was trained at (640 if unknown)
    backbone_batch: int = 32  # images per forward pass
    backbone_layers: tuple[int, ...] = ()  # model.model indices to pool; (): the backbone's stride-8/16 layers
    # robust z of the projection on the top singular vector. Chosen on two development seeds (not the
    # benchmark's): 5 let one clean box through under a 10 % box shift, 6 none; clean sets alone stay < 3.
    feature_outlier_z: float = 6.0
    feature_min_class_boxes: int = 50  # classes with fewer boxes are not scored (no stable direction)
    # presence checks (same model): labels vs detections, matched by IoU across classes
    # a detection this sure is an object (unlabelled_object, detector_class_conflict); calibrated on clean
    # data the benchmark does not score (bench/poison_calibrate.py, seed 1): 0.5 named 8.5 % of clean
    # photographs with the demo detector, 0.75 0.5 %, generated scenes 0 % from 0.5 up
    presence_conf: float = 0.75
    presence_low_conf: float = 0.05  # a labelled box with no detection even this weak is a phantom
    # a phantom box must also fit its class template (orientation-field correlation) no better than this:
    # object-generation boxes measured at -0.10..0.21, clean boxes' 1st percentile 0.27 (photographs)
    presence_phantom_max_fit: float = 0.25
    presence_iou: float = 0.3  # a detection and a box overlap (as the same object) from this IoU

    # repeated patch: the same small picture in many unrelated images, found without label evidence
    patch_min_images: int = 5  # unrelated images (duplicate groups) one patch must appear in
    patch_min_codes: int = 20  # distinct block codes two images must share inside one compact region
    patch_max_image_fraction: float = 0.25  # a pattern in more images than this is the domain, not a patch

    # blended patch: block codes of the colour (Lab a*) channel, matched across images where a group of
    # them moves by one translation (blended.py); calibrated on the seed-0 benchmark sets (BENCHMARKS.md)
    blend_min_matches: int = 6  # distinct codes at one translation, in one compact region, to link two images (0: off)
    blend_chroma_gain: float = 3.0  # a* is amplified by this before coding (a blend halves the picture's contrast)
    blend_blur: float = 1.0  # Gaussian sigma (analysis pixels) before coding: the background's noise is not the picture
    blend_max_bucket: int = 32  # a code with more occurrences in the whole set is generic colour structure
    blend_translation_px: float = 2.0  # matches agree on a translation within 1.5x this (analysis pixels)
    blend_second_link: float = 0.5  # a pair agreeing at a second translation with this share of the matches: one scene
    blend_popular_docs: int = 5  # a code counts in a link only if the links it is part of span this many documents
    blend_min_partners: float = 2.0  # mean partner images per carrier of a pattern (chance links form chains)
    # median structure-tensor coherence of the members' windows above this: strokes (line ends at one
    # angle), not a picture (1: off; needs the search maps, computed while blend_min_matches > 0)
    blend_max_coherence: float = 0.45
    # ORB keypoints agreeing (one similarity) outside a linked region that make two images views of one
    # scene: their documents merge and the blended check never links them (0: off)
    blend_scene_inliers: int = 16

    # trigger search (search.py): a picture shared by flagged images (seeds), scanned for in every image
    search_min_seeds: int = 2  # seeds a confirmed group must hold (0: off)
    search_min_matches: int = 4  # colour codes at one translation that make a seed's link a candidate
    search_max_scans: int = 24  # scans of the whole set at most (each is linear in the images)
    search_z: float = 6.0  # robust z of a template's best score in an image, over all images
    # the z an image no other check names must reach to be named on the search's evidence alone (>= search_z)
    search_z_alone: float = 8.0
    search_max_coherence: float = 0.45  # structure-tensor coherence above this: a stroke or an edge, not a picture
    # the group's flagged images must be this unlikely at the set's flag rate (binomial tail): a trigger is
    # where the flags are; a shared scene or texture holds flagged images only by chance
    search_enrichment_p: float = 1e-3
    search_highpass: float = 4.0  # Gaussian sigma (search-map pixels) of the low frequencies removed
    # weight of L* against a*, b* on the search map: a see-through picture's colour survives the object or
    # texture under it, its lightness mixes with theirs (0: colour only)
    search_luma_weight: float = 0.25
    search_max_side: int = 256  # search maps (int8 Lab, in a temporary file) are at most this many pixels a side

    workers: int = 1  # processes for per-sample feature extraction (1: in-process)
    seed: int = 0  # for the template sample; the stage is deterministic

    def __post_init__(self) -> None:
        unknown = set(self.policies) - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown checks in policies: {sorted(unknown)}; known: {CHECKS}")
        merged = {**DEFAULT_ACTIONS, **dict(self.policies)}
        for name, action in merged.items():
            _check_action(name, action)
        if merged["distribution_drift"] == QUARANTINE:
            raise ValueError("distribution_drift is a property of the whole set: its policy is 'warn' or 'fail'")
        object.__setattr__(self, "policies", merged)
        if not 0 <= self.near_dup_radius < 32:
            raise ValueError("near_dup_radius must be in 0..31")
        if not 0 <= self.leak_neighbours <= 16:
            raise ValueError("leak_neighbours must be in 0..16")
        if not -1.0 <= self.presence_phantom_max_fit <= 1.0:
            raise ValueError("presence_phantom_max_fit must be in -1..1")
        if not 0.0 <= self.dup_box_min_agreement <= 1.0:
            raise ValueError("dup_box_min_agreement must be in 0..1 (0: every box counts)")
        if not -1.0 <= self.leak_min_similarity <= 1.0 or not 0.0 <= self.leak_min_overlap <= 1.0:
            raise ValueError("leak_min_similarity must be in -1..1 and leak_min_overlap in 0..1")
        if self.block_px < 4 or self.block_px % 2:
            raise ValueError("block_px must be an even number >= 4")
        if self.stats_boxes_per_image < 1:
            raise ValueError("stats_boxes_per_image must be >= 1")
        if self.max_boxes_per_image < 1:
            raise ValueError("max_boxes_per_image must be >= 1")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.search_min_seeds < 0 or self.search_min_matches < 1 or self.search_max_scans < 0 \
                or not 0 < self.search_enrichment_p <= 1 \
                or self.search_z <= 0 or self.search_highpass <= 0 or self.search_max_side < 16 \
                or not 0 <= self.search_luma_weight <= 1 or self.search_z_alone < self.search_z:
            raise ValueError("trigger search: search_min_seeds >= 0, search_min_matches >= 1, "
                             "search_max_scans >= 0, 0 < search_enrichment_p <= 1, search_z > 0, search_highpass > 0, "
                             "search_max_side >= 16, 0 <= search_luma_weight <= 1, search_z_alone >= search_z")
        if not 0 < self.blend_max_coherence <= 1:
            raise ValueError("blend_max_coherence must be in (0, 1] (1: off)")
        if self.blend_scene_inliers < 0:
            raise ValueError("blend_scene_inliers must be >= 0 (0: off)")
        self._check_backbone()

    def _check_backbone(self) -> None:
        if self.backbone_model is not None:
            from secure_data.models.pinned import normalise_sha256

            object.__setattr__(self, "backbone_model", str(self.backbone_model))
            if not self.backbone_model_sha256:
                raise ValueError("backbone_model_sha256 is required with backbone_model: "
                                 "a model is loaded only against a pin")
            object.__setattr__(self, "backbone_model_sha256", normalise_sha256(self.backbone_model_sha256))
        d = self.backbone_device
        if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise ValueError(f"backbone_device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {d!r}")
        if self.backbone_imgsz < 0 or self.backbone_batch < 1 or self.feature_min_class_boxes < 2:
            raise ValueError("backbone_imgsz must be >= 0, backbone_batch >= 1, feature_min_class_boxes >= 2")
        if self.feature_outlier_z <= 0:
            raise ValueError("feature_outlier_z must be > 0")
        if not (0 < self.presence_low_conf < self.presence_conf < 1 and 0 < self.presence_iou < 1):
            raise ValueError("presence thresholds need 0 < presence_low_conf < presence_conf < 1, 0 < presence_iou < 1")
        object.__setattr__(self, "backbone_layers", tuple(int(i) for i in self.backbone_layers))

    @property
    def backbone_enabled(self) -> bool:
        return self.backbone_model is not None

    @property
    def search_enabled(self) -> bool:
        """The trigger search runs (its candidates come from the blended check's colour codes)."""
        return self.search_min_seeds > 0 and self.blend_min_matches > 0

    @property
    def maps_needed(self) -> bool:
        """The image pass keeps a search map per image (the trigger search; the blended check's stroke test)."""
        return self.blend_min_matches > 0

    def action(self, check: str) -> str:
        return self.policies[check]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PoisoningConfig:
        """Build from operator/DAG input. Strict: an unknown key is an error (a typo must not keep a default).

        Accepts, besides the field names: ``<check>_policy`` keys and the group keys of
        :data:`POLICY_GROUPS` (``outlier_policy`` etc.). Values rendered by Jinja arrive as
        strings and are converted to the field's type; ``""``/``"None"`` mean "use the default".
        """
        if not data:
            return cls()
        defaults = cls()
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        policies: dict[str, str] = {}
        unknown = []
        for key, raw in data.items():
            if raw is None or (isinstance(raw, str) and raw.strip() in ("", "None")):
                continue
            if key in POLICY_GROUPS:
                policies.update({check: str(raw).strip() for check in POLICY_GROUPS[key]})
            elif key.endswith("_policy") and key[: -len("_policy")] in CHECKS:
                policies[key[: -len("_policy")]] = str(raw).strip()
            elif key == "policies":
                policies.update({str(k): str(v).strip() for k, v in dict(raw).items()})
            elif key in known:
                values[key] = _coerce(key, raw, getattr(defaults, key))
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"unknown poisoning config keys {sorted(unknown)}; known: {sorted(known)} "
                             f"plus <check>_policy and {sorted(POLICY_GROUPS)}")
        return cls(**values, policies=policies)

    def with_policies(self, **policies: str) -> PoisoningConfig:
        return replace(self, policies={**dict(self.policies), **policies})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["policies"] = dict(self.policies)
        if not self.backbone_enabled:  # left out at their defaults: see BACKBONE_FIELDS
            defaults = PoisoningConfig()
            for name in BACKBONE_FIELDS:
                if out[name] == getattr(defaults, name):
                    del out[name]
            for check in BACKBONE_CHECKS:
                if out["policies"][check] == DEFAULT_ACTIONS[check]:
                    del out["policies"][check]
        if "backbone_layers" in out:
            out["backbone_layers"] = list(self.backbone_layers)
        return out
