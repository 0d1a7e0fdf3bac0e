"""The bad-input corpus (secure_data_testkit.badinputs) mixed into a generated dataset, through the chain.

Integrity: no crash; every bad file gets exactly the documented outcome and reason codes;
every untouched file is accepted without a reason; one record per entry on disk
(symlinks, FIFOs included); a .reason.json per quarantined file. Then poisoning,
anonymize and the hand-off run on the result: no record is lost at any stage, and every
good file arrives in the signed, encrypted package (opened with the trainer identity).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from secure_data.dataset.layout import UnsafePathError, safe_relpath
from secure_data.dataset.quarantine import REASON_SUFFIX
from secure_data_testkit.badinputs import ACCEPTED, KINDS, OUTCOMES, QUARANTINED, WARNED


def _outcome(record) -> str:
    if not record.accepted:
        return QUARANTINED
    return WARNED if record.reasons else ACCEPTED


def _reason_file(qroot: Path, path: str) -> Path:
    """Where the stage put the reason file: next to the copy, or under _unsafe_names/ for unsafe names."""
    hashed = qroot / "_unsafe_names" / (hashlib.sha256(path.encode("utf-8")).hexdigest() + REASON_SUFFIX)
    try:
        safe_relpath(path)
    except UnsafePathError:
        return hashed
    normal = qroot / (path + REASON_SUFFIX)
    return normal if normal.exists() else hashed


# ------------------------------------------------------------------------------------------ the corpus


def test_the_corpus_covers_at_least_35_kinds(corpus):
    kinds = [b.kind for b in corpus.bad]
    assert len(kinds) == len(set(kinds)) == len(KINDS) >= 35
    outcomes = Counter(b.outcome for b in corpus.bad)
    assert set(outcomes) <= set(OUTCOMES)
    assert outcomes[QUARANTINED] >= 30 and outcomes[WARNED] >= 4, outcomes
    assert not set(corpus.expected) & set(corpus.originals), "a kind changed one of the generated files"
    for b in corpus.bad:
        assert b.relpaths and b.description, b.kind
        assert all(e.codes for e in b.expectations if e.outcome != ACCEPTED), b.kind


# ------------------------------------------------------------------------------------------ integrity


def test_integrity_records_every_entry_on_disk(corpus, integrity_run):
    records = integrity_run.manifest.records
    counts = integrity_run.result.counts
    assert len(records) == counts["files"] == corpus.n_entries  # symlinks, FIFOs, dirs it cannot list included
    assert counts["accepted"] + counts["quarantined"] == counts["files"]
    assert len({r.path for r in records}) == len(records)
    missing = sorted(set(corpus.expected) - {r.path for r in records})
    assert not missing, f"bad inputs with no manifest record (silently dropped): {missing}"


def test_every_bad_input_gets_its_expected_outcome(corpus, integrity_run):
    by_path = integrity_run.manifest.by_path()
    wrong = []
    for bad in corpus.bad:
        for exp in bad.expectations:
            rec = by_path[exp.path]
            got_codes = {r.code for r in rec.reasons}
            if _outcome(rec) != exp.outcome or not set(exp.codes) <= got_codes:
                wrong.append(f"{bad.kind}: {exp.path!r} expected {exp.outcome} {list(exp.codes)}, "
                             f"got {_outcome(rec)} {sorted(got_codes)}")
            if exp.outcome == ACCEPTED and rec.reasons:
                wrong.append(f"{bad.kind}: {exp.path!r} expected no reason, got {sorted(got_codes)}")
    assert not wrong, "\n".join(wrong)


def test_every_untouched_file_is_accepted_without_reason(corpus, integrity_run):
    by_path = integrity_run.manifest.by_path()
    for path, sha in corpus.originals.items():
        rec = by_path[path]
        assert rec.accepted and not rec.reasons, (path, rec.reasons)
        assert rec.sha256 == sha
    unexplained = [r.path for r in integrity_run.manifest.records
                   if r.path not in corpus.originals and r.path not in corpus.expected]
    assert not unexplained, f"records that are neither generated nor injected: {unexplained}"


def test_every_quarantined_file_has_a_reason_file(integrity_run):
    qroot = integrity_run.layout.quarantine("integrity")
    quarantined = [r for r in integrity_run.manifest.records if not r.accepted]
    assert quarantined
    for rec in quarantined:
        reason_path = _reason_file(qroot, rec.path)
        assert reason_path.is_file(), f"no reason file for {rec.path!r}"
        doc = json.loads(reason_path.read_text(encoding="utf-8"))
        assert doc["path"] == rec.path and doc["sha256"] == rec.sha256
        assert [r["code"] for r in doc["reasons"]] == [r.code for r in rec.reasons]
        assert all(r["detail"] and r["stage"] == "integrity" for r in doc["reasons"])
        if doc["copied"]:
            copy = qroot / rec.path
            assert hashlib.sha256(copy.read_bytes()).hexdigest() == rec.sha256
        else:  # only what was never read (links, FIFOs, unsafe names, unlistable) or too large is not copied
            codes = {r.code for r in rec.reasons}
            assert rec.meta.get("read") is False or "file_too_large" in codes, rec.path
    reason_files = [p for p in qroot.rglob("*" + REASON_SUFFIX)]
    assert len(reason_files) == len(quarantined)


def test_nothing_outside_the_root_is_read(corpus, integrity_run):
    secret = b"TOP SECRET: outside the dataset root"
    assert (corpus.root.with_name(corpus.root.name + ".outside") / "secret.jpg").read_bytes().startswith(secret)
    for path in integrity_run.layout.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret not in path.read_bytes(), path


def test_accepted_pairs_are_the_pairs_the_trainer_reads(corpus, integrity_run):
    """Ultralytics finds an image's label with img2label_paths: every accepted image must be paired with
    exactly the accepted label the trainer will read (or none), or its boxes are silently lost."""
    from ultralytics.data.utils import img2label_paths

    accepted = [r for r in integrity_run.manifest.records if r.accepted]
    labels = {r.path: r for r in accepted if r.kind == "label"}
    by_sample = {r.sample: r.path for r in labels.values()}
    root = str(corpus.root)
    for image in (r for r in accepted if r.kind == "image"):
        trainer_label = Path(img2label_paths([f"{root}/{image.path}"])[0]).relative_to(root).as_posix()
        ours = by_sample.get(image.sample)
        assert ours == (trainer_label if trainer_label in labels else None), (image.path, ours, trainer_label)


# ------------------------------------------------------------------------------------------ downstream


def _assert_stage_keeps_every_record(upstream, run, stage: str) -> None:
    before = upstream.manifest.by_path()
    after = run.manifest.by_path()
    assert set(after) == set(before), f"{stage} lost or invented records"
    counts = run.result.counts
    assert counts["accepted"] + counts["quarantined"] == counts["files"] == len(before)
    qroot = run.layout.quarantine(stage)
    for path, rec in after.items():
        prev = before[path]
        if not prev.accepted:
            assert not rec.accepted and rec.reasons[: len(prev.reasons)] == prev.reasons, path
        elif not rec.accepted:  # newly quarantined here: a reason of this stage and a reason file
            assert any(r.stage == stage for r in rec.reasons), path
            assert _reason_file(qroot, path).is_file(), path


def test_poisoning_keeps_every_record(integrity_run, poisoning_run):
    _assert_stage_keeps_every_record(integrity_run, poisoning_run, "poisoning")


def test_anonymize_keeps_every_record(poisoning_run, anonymize_run):
    _assert_stage_keeps_every_record(poisoning_run, anonymize_run, "anonymize")


def test_every_good_file_arrives_in_the_package(corpus, anonymize_run, package, vault_keys):
    from secure_data.handoff.consumer import open_package

    _, trainer = vault_keys
    final = anonymize_run.manifest.by_path()
    # Untouched generated files are never dropped on the way (residual detections aside, which must be
    # quarantined with a reason and are then not "good" any more: none are expected on generated data).
    lost = [p for p in corpus.originals if not final[p].accepted]
    assert not lost, [(p, final[p].reasons) for p in lost]
    with open_package(package.uri, trainer) as pkg:
        on_disk = {p.relative_to(pkg.path).as_posix() for p in pkg.path.rglob("*") if p.is_file()}
        expected = {p for p, r in final.items() if r.accepted}
        assert on_disk == expected  # every accepted file, and no quarantined one
        for path in expected:
            data = (pkg.path / path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == final[path].sha256, path
        for path, sha in corpus.originals.items():
            if final[path].kind != "image":  # labels and data.yaml travel byte for byte
                assert hashlib.sha256((pkg.path / path).read_bytes()).hexdigest() == sha, path
        _assert_oddities_neutralised(corpus, pkg.path)


def _assert_oddities_neutralised(corpus, dataset: Path) -> None:
    """Accepted oddities whose BadInput says anonymize neutralises them: the packaged image is a
    plain, metadata-free, single-frame re-encode (no appended ZIP/HTML, EXIF, ICC, extra frames)."""
    import cv2
    import numpy as np
    from PIL import Image

    checked = 0
    for bad in corpus.bad:
        if bad.mitigated_by != "anonymize":
            continue
        image = next(e.path for e in bad.expectations if e.path.startswith("images/"))
        data = (dataset / image).read_bytes()
        for needle in (b"PK\x03\x04", b"<html", b"Exif\x00\x00", b"ICC_PROFILE", b"http://ns.adobe.com", b"acTL"):
            assert needle not in data, (bad.kind, needle)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded is not None and decoded.ndim == 3 and decoded.shape[2] == 3, bad.kind
        with Image.open(dataset / image) as im:
            assert getattr(im, "n_frames", 1) == 1 and not im.getexif(), bad.kind
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("kind", ["newline_in_name", "space_in_name", "case_colliding_names", "hidden_dotfile_sample",
                                  "same_stem_across_splits"])
def test_odd_but_valid_names_survive_the_chain(kind, corpus, anonymize_run):
    final = anonymize_run.manifest.by_path()
    bad = next(b for b in corpus.bad if b.kind == kind)
    for path in bad.relpaths:
        assert final[path].accepted, (kind, path, final[path].reasons)
