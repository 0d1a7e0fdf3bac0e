"""The typed stage contract: figures are fields, the XCom form round-trips, an undeclared figure is refused."""

from __future__ import annotations

import json

import pytest

from secure_data.dataset.manifest import FileRecord, Reason
from secure_data.dataset.stage import (
    AnonymizeFigures,
    IntegrityFigures,
    OtherFigures,
    StageCounts,
    StageFailed,
    StageResult,
    finish_stage,
    open_upstream,
)


def _records() -> list[FileRecord]:
    img = FileRecord(path="images/train/a.jpg", sha256="0" * 64, size=3, kind="image", split="train", sample="train/a")
    bad = FileRecord(path="images/train/b.jpg", sha256="1" * 64, size=4, kind="image", split="train", sample="train/b")
    return [img, bad.quarantined(Reason("image.truncated", "ends early", "integrity"))]


def test_a_result_round_trips_through_json_with_typed_fields(tmp_path):
    result = finish_stage("integrity", tmp_path / "manifest.jsonl", {"stage": "integrity"}, _records(),
                          data_root=tmp_path, figures=IntegrityFigures(verdict="warn", gx_success=True),
                          counts={"warned": 1})
    wire = json.loads(json.dumps(result.to_xcom()))
    back = StageResult.from_xcom(wire)
    assert back == result
    assert isinstance(back.counts, StageCounts) and isinstance(back.figures, IntegrityFigures)
    assert (back.counts.files, back.counts.accepted, back.counts.quarantined, back.counts.warned) == (2, 1, 1, 1)
    assert back.figures.verdict == "warn" and back.figures.tamper_diff is None
    assert wire["extra"] == {"verdict": "warn", "gx_success": True}  # unset figures stay off the wire
    assert back.extra["verdict"] == "warn" and dict(back.counts)["images_accepted"] == 1


def test_an_undeclared_figure_of_a_known_stage_is_refused():
    wire = {"stage": "anonymize", "manifest_path": "m", "manifest_digest": "sha256:" + "0" * 64, "counts": {},
            "data_root": "d", "extra": {"n_obfuscated": 3}}  # the name a reader once expected, never written
    with pytest.raises(ValueError, match="n_obfuscated"):
        StageResult.from_xcom(wire)
    with pytest.raises(TypeError):
        AnonymizeFigures(n_obfuscated=3)  # type: ignore[call-arg]
    other = StageResult.from_xcom({**wire, "stage": "custom"})
    assert isinstance(other.figures, OtherFigures) and other.extra["n_obfuscated"] == 3


def test_finish_stage_refuses_a_stage_that_lost_a_record_and_open_upstream_checks_the_digest(tmp_path):
    up = finish_stage("integrity", tmp_path / "up.jsonl", {}, _records(), data_root=tmp_path, figures={})
    _, manifest = open_upstream(up.to_xcom())
    assert manifest.counts()["files"] == 2
    with pytest.raises(AssertionError, match="lost or invented"):
        finish_stage("poisoning", tmp_path / "p.jsonl", {}, _records()[:1], data_root=tmp_path, figures={},
                     upstream=manifest)
    (tmp_path / "up.jsonl").write_text((tmp_path / "up.jsonl").read_text().replace("ends early", "ends later"))
    with pytest.raises(Exception, match="digest"):
        open_upstream(up)
    failed = StageFailed("policy fail fired", up)
    assert failed.result is up and isinstance(failed, RuntimeError)
