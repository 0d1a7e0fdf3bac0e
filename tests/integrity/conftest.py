"""Integrity fixtures: a generated YOLO dataset mixed with every kind of bad input, and what each should get."""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from secure_data.dataset.stage import RunLayout
from secure_data.integrity.config import IntegrityConfig
from secure_data_testkit.badinputs import png_with_header
from secure_data_testkit.datasets import make_yolo_dataset

# Policy-relevant checks in these tests rely on the defaults documented in docs/integrity.md.
DEFAULT_CONFIG = IntegrityConfig(workers=2)


def reencode(jpeg: bytes, fmt: str, **params) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    with Image.open(io.BytesIO(jpeg)) as img:
        img.save(out, format=fmt, **params)
    return out.getvalue()


@dataclass(frozen=True)
class MixedDataset:
    root: Path
    outside: Path  # a directory outside the root that symlinks point into
    expected: dict[str, tuple[str, str]]  # path -> (status, reason code it must carry)
    n_files: int  # every entry under root (regular files and symlinks)


def build_mixed_dataset(base: Path) -> MixedDataset:
    """20 generated train + 4 val samples, then a bad input of every kind the issue lists."""
    root = make_yolo_dataset(base / "dataset", n_train=20, n_val=4, seed=7)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"TOP-SECRET-OUTSIDE-THE-ROOT")
    (outside / "more.jpg").write_bytes(b"ALSO-OUTSIDE")
    img = root / "images" / "train"
    lbl = root / "labels" / "train"
    expected: dict[str, tuple[str, str]] = {}

    def image(stem: str) -> str:
        return f"images/train/{stem}.jpg"

    def label(stem: str) -> str:
        return f"labels/train/{stem}.txt"

    # --- bad images (each keeps its valid label, which must follow it into quarantine) ---
    good = (img / "train_00000.jpg").read_bytes()
    data = (img / "train_00001.jpg").read_bytes()
    (img / "train_00001.jpg").write_bytes(data[: len(data) // 2])
    expected[image("train_00001")] = ("quarantined", "truncated")
    expected[label("train_00001")] = ("quarantined", "sample_image_rejected")

    (img / "train_00002.jpg").write_text("this is a text file, not a JPEG\n")
    expected[image("train_00002")] = ("quarantined", "not_an_image")
    expected[label("train_00002")] = ("quarantined", "sample_image_rejected")

    (img / "train_00003.jpg").write_bytes(b"")
    expected[image("train_00003")] = ("quarantined", "empty_file")
    expected[label("train_00003")] = ("quarantined", "sample_image_rejected")

    (img / "train_00004.jpg").unlink()
    (img / "train_00004.png").write_bytes(png_with_header(100_000, 100_000))
    expected["images/train/train_00004.png"] = ("quarantined", "decompression_bomb")
    expected[label("train_00004")] = ("quarantined", "sample_image_rejected")

    (img / "train_00005.jpg").unlink()
    os.symlink(outside / "secret.jpg", img / "train_00005.jpg")
    expected[image("train_00005")] = ("quarantined", "symlink")
    expected[label("train_00005")] = ("quarantined", "sample_image_rejected")
    os.symlink(outside, root / "images" / "linked")  # a symlinked directory: never descended into
    expected["images/linked"] = ("quarantined", "symlink")

    # A PNG named .jpg is fine: accepted, the sniffed type recorded, a warning on the record.
    (img / "train_00006.jpg").write_bytes(reencode((img / "train_00006.jpg").read_bytes(), "PNG"))
    expected[image("train_00006")] = ("accepted", "extension_mismatch")
    expected[label("train_00006")] = ("accepted", "")

    # --- bad labels (their images must follow them into quarantine) ---
    bad_labels = {
        "train_00007": ("5 0.5 0.5 0.1 0.1\n", "label_class_out_of_range"),
        "train_00008": ("0 nan 0.5 0.1 0.1\n", "label_non_finite"),
        "train_00009": ("0 0.5 0.5 0.1\n", "label_missing_fields"),
        "train_00010": ("0 0.5 0.5 0.1 0.1 0.3\n", "label_extra_fields"),
        "train_00011": ("0 1.5 0.5 0.1 0.1\n", "label_coord_out_of_range"),
        "train_00012": ("0 0.5 0.5 0.0 0.1\n", "label_nonpositive_size"),
        "train_00013": ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n", "label_duplicate_box"),
        "train_00014": ("1 0.95 0.5 0.2 0.1\n", "label_box_outside_image"),
        "train_00015": ("face 0.5 0.5 0.2 0.2\n", "label_parse_error"),
    }
    for stem, (text, code) in bad_labels.items():
        (lbl / f"{stem}.txt").write_text(text)
        expected[label(stem)] = ("quarantined", code)
        expected[image(stem)] = ("quarantined", "sample_label_rejected")

    # Empty label file: a YOLO background image; policy empty_labels (default warn).
    (lbl / "train_00016.txt").write_bytes(b"")
    expected[label("train_00016")] = ("accepted", "label_empty")
    expected[image("train_00016")] = ("accepted", "")

    # Image without a label: background image; policy background_images (default warn).
    (lbl / "train_00017.txt").unlink()
    expected[image("train_00017")] = ("accepted", "image_without_label")

    # Label without an image: policy orphan_labels (default quarantine).
    (img / "train_00018.jpg").unlink()
    expected[label("train_00018")] = ("quarantined", "label_without_image")

    # A file outside the layout: policy unexpected_files (default quarantine).
    (root / "notes.txt").write_text("not part of the dataset\n")
    expected["notes.txt"] = ("quarantined", "unexpected_file")

    # An untouched sample stays accepted with no reasons.
    expected[image("train_00019")] = ("accepted", "")
    expected[label("train_00019")] = ("accepted", "")
    assert good  # train_00000 is used by other tests as a known-good image

    n_files = sum(len(files) + sum(1 for d in dirs if (Path(dirpath) / d).is_symlink())
                  for dirpath, dirs, files in os.walk(root))
    return MixedDataset(root=root, outside=outside, expected=expected, n_files=n_files)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> MixedDataset:
    return build_mixed_dataset(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="module")
def mixed_run(mixed, tmp_path_factory):
    """One integrity run over the mixed dataset with the default policies: (result, layout)."""
    from secure_data.integrity.run import run_integrity

    layout = RunLayout.for_run(tmp_path_factory.mktemp("out"), "dag", "run-1")
    return run_integrity(mixed.root, layout, config=DEFAULT_CONFIG), layout


@pytest.fixture
def dataset(tmp_path):
    """A small clean dataset (train 6, val 2) per test, for tests that mutate it."""
    return make_yolo_dataset(tmp_path / "ds", n_train=6, n_val=2, seed=3)


@pytest.fixture
def layout_factory(tmp_path):
    counter = iter(range(1000))

    def make(name: str | None = None) -> RunLayout:
        return RunLayout.for_run(tmp_path / "out", "dag", name or f"run-{next(counter)}")

    return make


def copy_sample(root: Path, src_stem: str, dst_stem: str, split: str = "train") -> None:
    """Duplicate a sample under a new name (same bytes: a duplicate hash for GX)."""
    shutil.copy(root / "images" / split / f"{src_stem}.jpg", root / "images" / split / f"{dst_stem}.jpg")
    shutil.copy(root / "labels" / split / f"{src_stem}.txt", root / "labels" / split / f"{dst_stem}.txt")
