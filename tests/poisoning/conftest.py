"""Poisoning fixtures: one clean generated dataset per session (attacks copy it), and a stage runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import RunLayout
from secure_data.poisoning import PoisoningConfig, run_poisoning
from secure_data.poisoning.findings import read_findings
from secure_data_testkit.attacks import integrity_like_manifest, make_clean_dataset

# Large enough for per-class statistics and the enrichment test; small enough for a quick suite.
N_TRAIN, N_VAL = 320, 80


@pytest.fixture(scope="session")
def clean_root(tmp_path_factory) -> Path:
    return make_clean_dataset(tmp_path_factory.mktemp("poison") / "clean", n_train=N_TRAIN, n_val=N_VAL, seed=11)


@pytest.fixture
def dataset(clean_root, tmp_path) -> Path:
    """A private, writable copy of the clean dataset."""
    return Path(shutil.copytree(clean_root, tmp_path / "dataset"))


class Screen:
    """Integrity-style manifest -> run_poisoning -> findings by check, for one dataset root."""

    def __init__(self, root: Path, work: Path, config: PoisoningConfig | None = None) -> None:
        self.root, self.work = root, work
        self.upstream = integrity_like_manifest(root, work / "integrity")
        self.layout = RunLayout(work / "run")
        self.result = run_poisoning(self.upstream, self.layout, config=config or PoisoningConfig())
        self.findings = read_findings(self.result.extra["findings_path"])
        self.manifest = read_manifest(self.result.manifest_path, expected_digest=self.result.manifest_digest)

    def suspects(self, check: str | None = None) -> set[str]:
        return {k for f in self.findings if check is None or f["check"] == check for k in f["suspects"]}


@pytest.fixture
def screen(tmp_path):
    def run(root: Path, config: PoisoningConfig | None = None, name: str = "work") -> Screen:
        return Screen(root, tmp_path / name, config)

    return run
