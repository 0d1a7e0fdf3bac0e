"""Reliability fixtures: a generated dataset with the whole bad-input corpus mixed in, run through the chain.

Each stage runs once per module (module-scoped fixtures) and the tests assert different
properties of the same run, so a failure names the property that broke.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from secure_data.dataset.manifest import Manifest, read_manifest
from secure_data.dataset.stage import RunLayout, StageResult
from secure_data.integrity.config import IntegrityConfig
from secure_data_testkit.badinputs import BadInput, Expectation, count_entries, inject_bad_inputs, unlock
from secure_data_testkit.datasets import make_yolo_dataset

N_TRAIN, N_VAL = 16, 4
CONFIG = IntegrityConfig(workers=2)  # the documented default policies


@dataclass(frozen=True)
class Corpus:
    root: Path
    bad: tuple[BadInput, ...]
    expected: dict[str, Expectation]  # manifest path -> what it must get
    originals: dict[str, str]  # every untouched generated file -> its sha256
    n_entries: int  # input entries on disk (files, symlinks, FIFOs, unlistable folders)


@dataclass(frozen=True)
class StageRun:
    result: StageResult
    layout: RunLayout
    manifest: Manifest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_corpus(base: Path, seed: int = 0) -> Corpus:
    root = make_yolo_dataset(base / "dataset", n_train=N_TRAIN, n_val=N_VAL, seed=seed + 11)
    originals = {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
    bad = tuple(inject_bad_inputs(root, seed=seed))
    expected = {e.path: e for b in bad for e in b.expectations}
    return Corpus(root=root, bad=bad, expected=expected, originals=originals, n_entries=count_entries(root))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    c = build_corpus(tmp_path_factory.mktemp("reliability"))
    yield c
    unlock(c.root)


@contextlib.contextmanager
def quiet_pillow():
    """Keep Pillow's per-tag EXIF warnings out of the test output: one corpus file
    (exif_many_ifd_entries) makes Pillow warn 5000 times per read (see test_found_defects.py)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def run_integrity_quietly(root: Path, layout: RunLayout, config: IntegrityConfig = CONFIG):
    from secure_data.integrity import run_integrity

    with quiet_pillow():
        return run_integrity(root, layout, config=config)


@pytest.fixture
def quiet_integrity():
    """run_integrity_quietly, for tests that build their own datasets."""
    return run_integrity_quietly


@pytest.fixture(scope="module")
def integrity_run(corpus, tmp_path_factory) -> StageRun:
    layout = RunLayout.for_run(tmp_path_factory.mktemp("out"), "reliability", "bad-inputs")
    result = run_integrity_quietly(corpus.root, layout)
    return StageRun(result, layout, read_manifest(result.manifest_path, expected_digest=result.manifest_digest))


@pytest.fixture(scope="module")
def poisoning_run(integrity_run) -> StageRun:
    from secure_data.poisoning import run_poisoning

    with quiet_pillow():
        result = run_poisoning(integrity_run.result, integrity_run.layout)
    return StageRun(result, integrity_run.layout,
                    read_manifest(result.manifest_path, expected_digest=result.manifest_digest))


@pytest.fixture(scope="module")
def anonymize_run(poisoning_run) -> StageRun:
    from secure_data.anonymize import AnonymizeConfig, DetectorSpec, merge_anonymize, run_anonymize_shard
    from secure_data_testkit.models import demo_detector

    os.environ.setdefault("YOLO_OFFLINE", "1")
    model, sha = demo_detector()  # cached yolo11n trained on the generator's faces/plates
    # CPU and the model's training size keep this fast; the GPU path is the anonymize area's to test.
    config = AnonymizeConfig(detectors=(DetectorSpec(model_path=str(model), model_sha256=sha),), imgsz=160,
                             device="cpu", batch_size=16)
    up, layout = poisoning_run.result, poisoning_run.layout
    with quiet_pillow():
        shard = run_anonymize_shard(up, layout, config=config)
        result = merge_anonymize(up, layout, [shard], config)
    return StageRun(result, layout, read_manifest(result.manifest_path, expected_digest=result.manifest_digest))


@pytest.fixture(scope="module")
def vault_keys(openbao):
    """(sanitizer, trainer) key services of the bootstrapped session OpenBao."""
    from secure_data.vault.keyservice import VaultKeyService
    from secure_data_testkit.vault_fixtures import bootstrap_test_vault

    creds = bootstrap_test_vault(openbao)
    return tuple(VaultKeyService.for_approle(openbao.url, creds.role(r).role_id, creds.role(r).secret_id)
                 for r in ("sanitizer", "trainer"))


@pytest.fixture(scope="module")
def package(anonymize_run, poisoning_run, integrity_run, vault_keys, tmp_path_factory):
    from secure_data.handoff.from_stage import package_stage

    sanitizer, _ = vault_keys
    return package_stage(anonymize_run.result, tmp_path_factory.mktemp("packages"), sanitizer,
                         name="bad-inputs", lineage=(integrity_run.result, poisoning_run.result))
