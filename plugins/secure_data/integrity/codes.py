"""Reason codes of the integrity stage and which policy decides what each one does.

A code is a stable, machine-readable name (it lands in manifests, quarantine
reason files and dashboards: never rename one). Each code maps either to a
fixed action (safety checks that no policy may relax) or to the name of a
policy field of :class:`~secure_data.integrity.config.IntegrityConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGE = "integrity"

FAIL = "fail"
WARN = "warn"
QUARANTINE = "quarantine"
ACCEPT = "accept"  # only for the two YOLO background-image conventions: no reason is recorded at all
ACTIONS = (FAIL, WARN, QUARANTINE)
# The stronger action wins when one file collects several findings.
ACTION_RANK = {WARN: 0, QUARANTINE: 1, FAIL: 2}


@dataclass(frozen=True)
class FileFinding:
    """One thing a check found about one file (or the whole dataset when ``path`` is None)."""

    code: str
    detail: str = ""


# --- file level (any kind) -------------------------------------------------
SYMLINK = "symlink"
NOT_REGULAR_FILE = "not_regular_file"
UNSAFE_PATH = "unsafe_path"
HARD_LINK = "hard_link"  # link count > 1: the bytes may be another file's, anywhere; never read or copied
PATH_TOO_LONG = "path_too_long"  # name or path too long for the stages after integrity (docs/integrity.md)
UNREADABLE = "unreadable"
FILE_TOO_LARGE = "file_too_large"
MIRROR_MISMATCH = "mirror_mismatch"
UNEXPECTED_FILE = "unexpected_file"
CHECK_ERROR = "check_error"
QUARANTINE_COPY_FAILED = "quarantine_copy_failed"

# --- images ----------------------------------------------------------------
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
EXTENSION_MISMATCH = "extension_mismatch"
DECOMPRESSION_BOMB = "decompression_bomb"
TRUNCATED = "truncated"
DECODE_ERROR = "decode_error"
EXIF_GPS = "exif_gps"
EXIF_ORIENTATION = "exif_orientation"

# --- labels ----------------------------------------------------------------
LABEL_EMPTY = "label_empty"
LABEL_NOT_UTF8 = "label_not_utf8"
LABEL_MISSING_FIELDS = "label_missing_fields"
LABEL_EXTRA_FIELDS = "label_extra_fields"
LABEL_PARSE_ERROR = "label_parse_error"
LABEL_CLASS_OUT_OF_RANGE = "label_class_out_of_range"
LABEL_NON_FINITE = "label_non_finite"
LABEL_COORD_OUT_OF_RANGE = "label_coord_out_of_range"
LABEL_NONPOSITIVE_SIZE = "label_nonpositive_size"
LABEL_BOX_OUTSIDE_IMAGE = "label_box_outside_image"
LABEL_DUPLICATE_BOX = "label_duplicate_box"

# --- samples (image + label pairing) ---------------------------------------
IMAGE_WITHOUT_LABEL = "image_without_label"
LABEL_WITHOUT_IMAGE = "label_without_image"
AMBIGUOUS_SAMPLE = "ambiguous_sample"
NESTED_IMAGES_FOLDER = "nested_images_folder"  # the trainer would read another label than the layout pairs
SAMPLE_IMAGE_REJECTED = "sample_image_rejected"
SAMPLE_LABEL_REJECTED = "sample_label_rejected"

# --- tamper diff against the reference manifest ------------------------------
TAMPER_ADDED = "tamper_added"
TAMPER_REMOVED = "tamper_removed"
TAMPER_MODIFIED = "tamper_modified"

# --- Great Expectations ------------------------------------------------------
GX_DUPLICATE_HASH = "gx_duplicate_hash"
GX_FORMAT_NOT_ALLOWED = "gx_format_not_allowed"
GX_WIDTH_OUT_OF_BOUNDS = "gx_width_out_of_bounds"
GX_HEIGHT_OUT_OF_BOUNDS = "gx_height_out_of_bounds"
GX_CHANNELS_NOT_ALLOWED = "gx_channels_not_allowed"
GX_BIT_DEPTH_NOT_ALLOWED = "gx_bit_depth_not_allowed"
GX_IMAGE_VALID_RATE = "gx_image_valid_rate"
GX_LABEL_VALID_RATE = "gx_label_valid_rate"
GX_SPLIT_SIZE = "gx_split_size"
GX_REQUIRED_SPLITS = "gx_required_splits"
GX_CLASS_COUNT = "gx_class_count"

LABEL_CONTENT_CODES = frozenset({
    LABEL_NOT_UTF8, LABEL_MISSING_FIELDS, LABEL_EXTRA_FIELDS, LABEL_PARSE_ERROR, LABEL_CLASS_OUT_OF_RANGE,
    LABEL_NON_FINITE, LABEL_COORD_OUT_OF_RANGE, LABEL_NONPOSITIVE_SIZE, LABEL_BOX_OUTSIDE_IMAGE,
    LABEL_DUPLICATE_BOX,
})
GX_ROW_CODES = frozenset({
    GX_DUPLICATE_HASH, GX_FORMAT_NOT_ALLOWED, GX_WIDTH_OUT_OF_BOUNDS, GX_HEIGHT_OUT_OF_BOUNDS,
    GX_CHANNELS_NOT_ALLOWED, GX_BIT_DEPTH_NOT_ALLOWED,
})
GX_DATASET_CODES = frozenset({
    GX_IMAGE_VALID_RATE, GX_LABEL_VALID_RATE, GX_SPLIT_SIZE, GX_REQUIRED_SPLITS, GX_CLASS_COUNT,
})

# Code -> name of the IntegrityConfig policy field that decides its action.
# Codes absent from this table are always quarantined: they are about safety
# (symlinks, bombs, undecodable bytes) and no policy may wave them through.
POLICY_OF: dict[str, str] = {
    UNEXPECTED_FILE: "unexpected_files",
    EXTENSION_MISMATCH: "extension_mismatch",
    EXIF_GPS: "exif_gps",
    EXIF_ORIENTATION: "exif_orientation",
    LABEL_EMPTY: "empty_labels",
    IMAGE_WITHOUT_LABEL: "background_images",
    LABEL_WITHOUT_IMAGE: "orphan_labels",
    TAMPER_ADDED: "tamper_added",
    TAMPER_REMOVED: "tamper_removed",
    TAMPER_MODIFIED: "tamper_modified",
    **{code: "invalid_labels" for code in LABEL_CONTENT_CODES},
    **{code: "gx_policy" for code in GX_ROW_CODES},
    **{code: "gx_dataset_policy" for code in GX_DATASET_CODES},
}


def stronger(a: str | None, b: str) -> str:
    """The stronger of two actions (``None`` means no action yet)."""
    if a is None or ACTION_RANK[b] > ACTION_RANK[a]:
        return b
    return a
