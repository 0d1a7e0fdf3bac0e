"""run_poisoning as a stage: conservation, quarantine with reasons, determinism, fail policy, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from secure_data.dataset.manifest import (
    ACCEPTED,
    QUARANTINED,
    ManifestError,
    Reason,
    digest_of,
    read_manifest,
    sha256_hex,
    write_manifest,
)
from secure_data.dataset.quarantine import REASON_SUFFIX
from secure_data.dataset.stage import RunLayout, StageResult
from secure_data.poisoning import PoisoningCheckFailed, PoisoningConfig, run_poisoning
from secure_data_testkit.attacks import inject_attack, integrity_like_manifest


@pytest.fixture
def attacked(clean_root, tmp_path):
    return inject_attack(clean_root, tmp_path / "attacked", attack="trigger_random", rate=0.1, seed=3)


def test_every_record_is_kept_and_quarantine_follows_the_policy(attacked, screen):
    s = screen(attacked.root)
    upstream = read_manifest(s.upstream.manifest_path)
    before, after = upstream.by_path(), s.manifest.by_path()
    assert set(before) == set(after)  # nothing lost, nothing invented
    assert all(after[p].sha256 == before[p].sha256 for p in before)
    counts = s.result.counts
    assert counts["accepted"] + counts["quarantined"] == counts["files"] == len(before)

    quarantine_suspects = {k for f in s.findings if f["action"] == "quarantine" for k in f["suspects"]}
    warn_only = {k for f in s.findings if f["action"] == "warn" for k in f["suspects"]} - quarantine_suspects
    assert quarantine_suspects and quarantine_suspects <= attacked.poisoned
    for rec in after.values():
        if rec.sample in quarantine_suspects:
            assert rec.status == QUARANTINED, rec.path  # image and label go together
            assert all(r.stage == "poisoning" and r.code.startswith("poisoning.") for r in rec.reasons)
            assert any(r.code == "poisoning.trigger_patch" for r in rec.reasons)
            copy = s.layout.quarantine("poisoning") / rec.path
            assert sha256_hex(copy.read_bytes()) == rec.sha256
            doc = json.loads(copy.with_name(copy.name + REASON_SUFFIX).read_text())
            assert doc["copied"] is True and doc["sample"] == rec.sample
        else:
            assert rec.status == ACCEPTED, rec.path  # warn findings change nothing
    assert not any(after[p].status == QUARANTINED for p in after if after[p].sample in warn_only)
    assert s.result.extra["quarantined_samples"] == len(quarantine_suspects)


def test_findings_name_samples_and_evidence(attacked, screen):
    s = screen(attacked.root)
    trig = [f for f in s.findings if f["check"] == "trigger_patch"]
    assert len(trig) == 1
    ev = trig[0]["evidence"]
    assert set(trig[0]["suspects"]) == attacked.poisoned
    assert ev["fixed_position"] is False and ev["seed_member_documents"] >= ev["members"] // 2
    assert {o["sample"] for o in ev["occurrences"]} == attacked.poisoned
    # the patch region recorded for each carrier is where it was stamped: about 12 px (+ block) wide
    widths = [(o["region"][2] - o["region"][0]) * 160 for o in ev["occurrences"]]
    assert all(8 <= w <= 40 for w in widths)
    assert ev["labels_with_patch"]["class_share"].get("plate", 0) > 0.9  # the attack's target class


def test_outputs_are_byte_identical_on_rerun(attacked, tmp_path):
    upstream = integrity_like_manifest(attacked.root, tmp_path / "integrity")
    a = run_poisoning(upstream, RunLayout(tmp_path / "a"))
    b = run_poisoning(upstream, RunLayout(tmp_path / "b"))
    assert a.manifest_digest == b.manifest_digest
    assert a.extra["findings_digest"] == b.extra["findings_digest"]
    assert digest_of(Path(a.extra["findings_path"]).read_bytes()) == a.extra["findings_digest"]
    json.dumps(a.to_xcom())  # XCom-serialisable: paths, digests, counts only


def test_fail_policy_raises_after_writing_everything(attacked, tmp_path):
    upstream = integrity_like_manifest(attacked.root, tmp_path / "integrity")
    config = PoisoningConfig().with_policies(trigger_patch="fail", class_confusion="warn", box_outlier="warn",
                                             repeated_patch="warn",  # it names the same patch, label-free
                                             trigger_search="warn")  # and so does the search it seeds
    with pytest.raises(PoisoningCheckFailed, match="trigger_patch") as info:
        run_poisoning(upstream, RunLayout(tmp_path / "run"), config=config)
    result = info.value.result
    assert info.value.failed_checks == ("trigger_patch",)
    manifest = read_manifest(result.manifest_path, expected_digest=result.manifest_digest)
    assert manifest.counts()["quarantined"] == 0  # fail is not quarantine
    assert Path(result.extra["findings_path"]).exists()


def test_wrong_upstream_digest_is_refused(dataset, tmp_path):
    upstream = integrity_like_manifest(dataset, tmp_path / "integrity")
    forged = replace(upstream, manifest_digest="sha256:" + "0" * 64)
    with pytest.raises(ManifestError, match="digest"):
        run_poisoning(forged, RunLayout(tmp_path / "run"))


def test_tampered_and_undecodable_images_are_quarantined_not_crashed(dataset, tmp_path):
    (dataset / "images/train/train_00001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    upstream = integrity_like_manifest(dataset, tmp_path / "integrity")
    # changed after the manifest was written: the stage must not trust these bytes
    (dataset / "images/train/train_00002.jpg").write_bytes(b"swapped")
    result = run_poisoning(upstream, RunLayout(tmp_path / "run"))
    recs = read_manifest(result.manifest_path).by_path()
    for stem, needle in (("train_00001", "decode"), ("train_00002", "integrity")):
        rec = recs[f"images/train/{stem}.jpg"]
        assert rec.status == QUARANTINED and rec.reasons[-1].code == "poisoning.unreadable"
        assert needle in rec.reasons[-1].detail
        assert recs[f"labels/train/{stem}.txt"].status == QUARANTINED
    reason = RunLayout(tmp_path / "run").quarantine("poisoning") / "images/train/train_00002.jpg"
    assert json.loads(reason.with_name(reason.name + REASON_SUFFIX).read_text())["copied"] is False
    assert not reason.exists()  # bytes we cannot vouch for are not copied


def test_records_quarantined_upstream_stay_as_they_are(dataset, tmp_path):
    upstream = integrity_like_manifest(dataset, tmp_path / "integrity")
    manifest = read_manifest(upstream.manifest_path)
    gone = Reason("label_invalid", "upstream said so", "integrity")
    records = [r.quarantined(gone) if r.sample == "train/train_00005" else r for r in manifest.records]
    path = tmp_path / "integrity2" / "manifest.jsonl"
    digest = write_manifest(path, {"stage": "integrity"}, records)
    up2 = StageResult("integrity", str(path), digest, {}, str(dataset))
    result = run_poisoning(up2, RunLayout(tmp_path / "run"))
    after = read_manifest(result.manifest_path).by_path()
    assert after["images/train/train_00005.jpg"].reasons == (gone,)
    assert after["images/train/train_00005.jpg"].status == QUARANTINED
    assert result.counts["quarantined"] == 2


def test_parallel_feature_extraction_gives_the_same_outputs(tmp_path):
    from secure_data_testkit.attacks import make_clean_dataset

    root = make_clean_dataset(tmp_path / "small", n_train=64, n_val=16, seed=4)
    ds = inject_attack(root, tmp_path / "attacked", attack="label_flip", rate=0.1, seed=4)
    upstream = integrity_like_manifest(ds.root, tmp_path / "integrity")
    serial = run_poisoning(upstream, RunLayout(tmp_path / "serial"), config=PoisoningConfig(workers=1))
    fanned = run_poisoning(upstream, RunLayout(tmp_path / "fanned"), config=PoisoningConfig(workers=2))
    assert serial.extra["findings_digest"] == fanned.extra["findings_digest"]
    assert serial.extra["findings_by_check"].get("duplicate_label_conflict", 0) >= 1
