"""How a training task finds its package: the triggering Asset event first, the manual URI otherwise.

Uses the Task SDK's own accessor and event models (what a task's context holds in an
Asset-triggered run), built the way the task runner builds them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from secure_data.assets import PACKAGE_ASSET, package_asset
from secure_data.operators.handoff import resolve_package_ref


def _context(*events):
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    built = []
    for asset, extra, ts in events:
        built.append(AssetEventDagRunReferenceResult(
            asset=AssetReferenceAssetEventDagRun(name=asset.name, uri=asset.uri, extra={}), extra=extra,
            source_task_id="handoff", source_dag_id="secure_pretraining_sanitization", source_run_id="r",
            source_map_index=-1, source_aliases=[], timestamp=ts))
    return {"triggering_asset_events": TriggeringAssetEventsAccessor.build(built)}


def _extra(package_id: str) -> dict:
    return {"package_uri": f"file:///packages/{package_id}", "package_id": package_id,
            "manifest_digest": "sha256:" + "b" * 64, "counts": {"files": 3}}


def test_asset_event_wins_and_newest_event_is_used():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ctx = _context((PACKAGE_ASSET, _extra("pkg-old"), t0), (PACKAGE_ASSET, _extra("pkg-new"), t0 + timedelta(1)))
    ref = resolve_package_ref(ctx, PACKAGE_ASSET, package_uri="file:///ignored")
    assert (ref.uri, ref.package_id, ref.manifest_digest) == ("file:///packages/pkg-new", "pkg-new",
                                                              "sha256:" + "b" * 64)
    assert PACKAGE_ASSET.uri in ref.source


def test_events_of_other_assets_are_ignored_and_manual_uri_is_used():
    ctx = _context((package_asset("other"), _extra("pkg-x"), datetime(2026, 1, 1, tzinfo=UTC)))
    ref = resolve_package_ref(ctx, PACKAGE_ASSET, package_uri="/data/packages/p1", expected_package_id="p1")
    assert (ref.uri, ref.package_id, ref.manifest_digest) == ("/data/packages/p1", "p1", None)


def test_no_event_and_no_uri_is_a_clear_error():
    with pytest.raises(ValueError, match="no package to open"):
        resolve_package_ref(_context(), PACKAGE_ASSET, package_uri=None)


def test_event_without_uri_is_a_clear_error():
    ctx = _context((PACKAGE_ASSET, {"package_id": "p"}, datetime(2026, 1, 1, tzinfo=UTC)))
    with pytest.raises(ValueError, match="no package_uri"):
        resolve_package_ref(ctx, PACKAGE_ASSET)

