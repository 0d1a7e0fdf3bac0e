"""Thresholds and policies of the integrity stage (a frozen dataclass: one run, one config)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secure_data.integrity.codes import ACCEPT, ACTIONS, FAIL, QUARANTINE, WARN

# Fields that only tune execution. They stay out of the manifest header, so
# running with more workers gives the same manifest digest.
EXECUTION_FIELDS = frozenset({"workers"})
# Formats the sniffer recognises (Pillow format names). Pillow is only ever
# asked to open one of these: never EPS/PSD/... whatever the bytes claim.
KNOWN_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP")
POLICY_FIELDS = (
    "background_images", "empty_labels", "orphan_labels", "invalid_labels", "extension_mismatch", "exif_gps",
    "exif_orientation", "unexpected_files", "tamper_added", "tamper_removed", "tamper_modified", "gx_policy",
    "gx_dataset_policy",
)
# Images without labels and empty label files are YOLO's two ways of saying "background image":
# these two policies may also be "accept" (nothing recorded).
ACCEPTING_POLICIES = frozenset({"background_images", "empty_labels"})
# Shorthands accepted by from_dict: one key setting several policies (explicit keys win).
ALIASES = {"tamper_policy": ("tamper_added", "tamper_modified")}


@dataclass(frozen=True)
class IntegrityConfig:
    """Everything the integrity stage decides with. Policy values: "fail" | "warn" | "quarantine".

    "warn" keeps the file (the reason is recorded on an accepted record),
    "quarantine" copies the sample to quarantine and marks it quarantined,
    "fail" quarantines it too and then fails the stage after writing the manifest.
    """

    # --- hard safety limits (always quarantine) ---
    max_pixels: int = 50_000_000  # header width*height above this is a decompression bomb
    max_file_bytes: int = 256 * 1024 * 1024  # larger files are hashed (streamed) but not decoded
    max_label_bytes: int = 4 * 1024 * 1024
    box_tolerance: float = 1e-5  # slack for rounding when a box edge touches the image edge

    # --- Great Expectations suite thresholds ---
    allowed_formats: tuple[str, ...] = ("JPEG", "PNG")
    min_width: int = 8
    min_height: int = 8
    max_width: int = 16384
    max_height: int = 16384
    allowed_channels: tuple[int, ...] = (1, 3, 4)
    allowed_bit_depths: tuple[int, ...] = (8,)
    min_image_valid_rate: float = 0.5  # share of images that pass the per-file checks
    min_label_valid_rate: float = 0.5  # share of images whose label is present-and-valid (or allowed background)
    required_splits: tuple[str, ...] = ()
    min_images_per_split: int = 1
    max_images_per_split: int | None = None
    min_boxes_per_class: int = 0
    max_boxes_per_class: int | None = None

    # --- policies ---
    background_images: str = WARN  # image without a label file (YOLO background image)
    empty_labels: str = WARN  # label file present but empty (also a YOLO background image)
    orphan_labels: str = QUARANTINE  # label without an image
    invalid_labels: str = QUARANTINE  # any bad line in a label file
    extension_mismatch: str = WARN  # e.g. a PNG named .jpg (the sniffed format is recorded)
    exif_gps: str = WARN  # GPS position in EXIF (privacy: anonymization re-encodes without EXIF)
    exif_orientation: str = WARN  # EXIF orientation != 1: boxes may not match what a viewer shows
    unexpected_files: str = QUARANTINE  # files outside images/ + labels/ + data.yaml, unknown suffixes
    tamper_added: str = WARN
    tamper_removed: str = WARN
    tamper_modified: str = QUARANTINE
    gx_policy: str = QUARANTINE  # row-level expectations: the failing rows' samples
    gx_dataset_policy: str = FAIL  # table-level expectations (rates, split sizes, class counts): fail | warn

    # --- execution (not part of the manifest) ---
    workers: int = 0  # 0: one per CPU core

    def __post_init__(self) -> None:
        for name in POLICY_FIELDS:
            value = getattr(self, name)
            allowed = (*ACTIONS, ACCEPT) if name in ACCEPTING_POLICIES else ACTIONS
            if value not in allowed:
                raise ValueError(f"policy {name}={value!r} must be one of {allowed}")
        if self.gx_dataset_policy not in (FAIL, WARN):
            raise ValueError("gx_dataset_policy must be 'fail' or 'warn': a table-level expectation names no sample")
        unknown = sorted(set(self.allowed_formats) - set(KNOWN_FORMATS))
        if unknown:
            raise ValueError(f"allowed_formats {unknown} not in the recognised formats {KNOWN_FORMATS}")
        if self.max_pixels <= 0 or self.max_file_bytes <= 0 or self.max_label_bytes <= 0:
            raise ValueError("max_pixels, max_file_bytes and max_label_bytes must be positive")
        for name in ("min_image_valid_rate", "min_label_valid_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.workers < 0:
            raise ValueError("workers must be >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> IntegrityConfig:
        """Build from a plain mapping (operator argument, YAML, rendered template).

        Unknown keys are an error; lists become tuples; strings from non-native templates are
        converted to the field's type ("50000000" -> 50000000, "JPEG,PNG" -> ("JPEG", "PNG"),
        "" / "None" -> None where None is allowed); ``tamper_policy`` sets tamper_added and
        tamper_modified unless those are given too.
        """
        if not data:
            return cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields) - set(ALIASES))
        if unknown:
            raise ValueError(f"unknown integrity config keys: {unknown}")
        values: dict[str, Any] = {}
        for alias, targets in ALIASES.items():
            if data.get(alias) is not None:
                values.update(dict.fromkeys(targets, data[alias]))
        for key, raw in data.items():
            if key in fields:
                values[key] = _coerce(key, raw, fields[key].type, getattr(cls, key, None))
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> IntegrityConfig:
        """A copy with the non-None overrides applied."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def policy(self, name: str) -> str:
        return getattr(self, name)

    def to_header(self) -> dict[str, Any]:
        """The part of the config that decides outcomes: recorded in the manifest header."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in EXECUTION_FIELDS:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _coerce(name: str, value: Any, annotation: Any, default: Any) -> Any:
    """A value of the field's type (annotations are strings under ``from __future__ import annotations``)."""
    text = str(annotation)
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, str) or text == "str":
        return value
    stripped = value.strip()
    if "None" in text and stripped in ("", "None", "null"):
        return None
    try:
        if text.startswith("tuple"):
            items = [v.strip().strip("'\"") for v in stripped.strip("()[]").split(",")]
            items = [v for v in items if v]
            return tuple(int(v) for v in items) if "int" in text else tuple(items)
        if text.startswith("int"):
            return int(stripped)
        if text.startswith("float"):
            return float(stripped)
    except ValueError as exc:
        raise ValueError(f"integrity config {name}={value!r} is not a valid {text}") from exc
    return value
