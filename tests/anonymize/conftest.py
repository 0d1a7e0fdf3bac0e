"""Fixtures for the anonymize tests: the cached demo detector, CenterFace, and upstream manifests.

The upstream manifest is built here directly from the files (what the integrity stage
records for them), so these tests exercise the anonymize stage on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from secure_data_testkit.manifests import upstream_for


@pytest.fixture(scope="session")
def demo_model() -> tuple[Path, str]:
    """The yolo11n trained on generated faces/plates (trained once, cached under .cache/models)."""
    from secure_data_testkit.models import demo_detector

    return demo_detector()


@pytest.fixture(scope="session")
def centerface() -> tuple[Path, str]:
    from secure_data_testkit.models import centerface_model

    return centerface_model()


@pytest.fixture
def make_upstream():
    return upstream_for
