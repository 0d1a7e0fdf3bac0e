"""Fixtures for the anonymize tests: the cached demo detector, CenterFace, and upstream manifests.

The upstream manifest is built here directly from the files (what the integrity stage
records for them), so these tests exercise the anonymize stage on its own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from secure_data.dataset.layout import walk_dataset
from secure_data.dataset.manifest import FileRecord, count_records, write_manifest
from secure_data.dataset.stage import RunLayout, StageResult


@pytest.fixture(scope="session")
def demo_model() -> tuple[Path, str]:
    """The yolo11n trained on generated faces/plates (trained once, cached under .cache/models)."""
    from secure_data.testing.models import demo_detector

    return demo_detector()


@pytest.fixture(scope="session")
def centerface() -> tuple[Path, str]:
    from secure_data.testing.models import centerface_model

    return centerface_model()


def upstream_for(root: Path, layout: RunLayout, stage: str = "integrity") -> StageResult:
    """A manifest of every file under ``root`` (all accepted) and its StageResult."""
    from secure_data.dataset.layout import image_stem_key

    records = []
    for entry in walk_dataset(root):
        data = (root / entry.relpath).read_bytes()
        sample = image_stem_key(entry.relpath) if entry.kind in ("image", "label") else None
        meta = {"format": Path(entry.relpath).suffix.lstrip(".").lower()} if entry.kind == "image" else {}
        records.append(FileRecord(path=entry.relpath, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                  kind=entry.kind, split=entry.split, sample=sample, meta=meta))
    path = layout.stage(stage) / "manifest.jsonl"
    digest = write_manifest(path, {"stage": stage}, records)
    return StageResult(stage=stage, manifest_path=str(path), manifest_digest=digest,
                       counts=count_records(records), data_root=str(root))


@pytest.fixture
def make_upstream():
    return upstream_for
