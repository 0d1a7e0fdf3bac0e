"""run_integrity end to end on real files: reason codes, invariants, determinism, policies, sources."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.quarantine import REASON_SUFFIX
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import DatasetError, IntegrityFailed, run_integrity

DEFAULT_CONFIG = IntegrityConfig(workers=2)


def _records(result):
    return read_manifest(result.manifest_path, expected_digest=result.manifest_digest).by_path()


def test_every_bad_input_gets_its_status_and_reason_code(mixed, mixed_run):
    result, _ = mixed_run
    records = _records(result)
    wrong = {}
    for path, (status, code) in mixed.expected.items():
        rec = records.get(path)
        got = (rec.status, [r.code for r in rec.reasons]) if rec else None
        if rec is None or rec.status != status or (code and code not in got[1]) or (not code and rec.reasons):
            wrong[path] = {"expected": (status, code), "got": got}
    assert wrong == {}


def test_accepted_plus_quarantined_equals_input(mixed, mixed_run):
    result, layout = mixed_run
    manifest = read_manifest(result.manifest_path, expected_digest=result.manifest_digest)
    counts = manifest.counts()
    assert counts["files"] == len(manifest.records) == mixed.n_files
    assert counts["accepted"] + counts["quarantined"] == counts["files"]
    assert result.counts["accepted"] + result.counts["quarantined"] == mixed.n_files
    assert manifest.header["counts"] == counts
    # every quarantined record has a reason file; readable ones have the exact bytes copied
    qroot = layout.quarantine("integrity")
    for rec in manifest.records:
        reason_file = qroot / (rec.path + REASON_SUFFIX)
        if rec.accepted:
            assert not reason_file.exists()
            continue
        doc = json.loads(reason_file.read_text())
        assert doc["sha256"] == rec.sha256
        assert [r["code"] for r in doc["reasons"]] == [r.code for r in rec.reasons]
        if doc["copied"]:
            import hashlib

            assert hashlib.sha256((qroot / rec.path).read_bytes()).hexdigest() == rec.sha256
        else:
            assert rec.meta.get("read") is False


def test_a_sample_is_quarantined_as_a_unit(mixed_run):
    result, _ = mixed_run
    records = _records(result)
    by_sample: dict[str, set[str]] = {}
    for rec in records.values():
        if rec.sample:
            by_sample.setdefault(rec.sample, set()).add(rec.status)
    mixed_status = {s: st for s, st in by_sample.items() if len(st) > 1}
    assert mixed_status == {}


def test_symlinks_are_recorded_never_followed(mixed, mixed_run):
    result, layout = mixed_run
    records = _records(result)
    link = records["images/train/train_00005.jpg"]
    assert link.meta == {"read": False}
    import hashlib

    assert link.sha256 == hashlib.sha256(os.fsencode(str(mixed.outside / "secret.jpg"))).hexdigest()
    assert not any(p.startswith("images/linked/") for p in records)  # the linked directory was not walked
    secret = b"TOP-SECRET-OUTSIDE-THE-ROOT"
    for path in layout.root.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path


def test_image_and_label_meta(mixed_run):
    records = _records(mixed_run[0])
    img = records["images/train/train_00019.jpg"]
    assert img.meta == {"format": "JPEG", "width": 160, "height": 160, "channels": 3, "bit_depth": 8, "frames": 1,
                        "has_exif": False, "has_gps": False, "orientation": 1}
    png = records["images/train/train_00006.jpg"]
    assert png.meta["format"] == "PNG" and png.accepted
    label = records["labels/train/train_00019.txt"]
    assert label.meta["n_boxes"] == len(label.meta["boxes"]) >= 1
    for cls, cx, cy, w, h in label.meta["boxes"]:
        assert cls in (0, 1) and 0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1
    header = read_manifest(mixed_run[0].manifest_path).header
    assert header["class_names"] == ["face", "plate"]
    assert header["verdict"] == "warn"
    assert header["config"]["max_pixels"] == DEFAULT_CONFIG.max_pixels and "workers" not in header["config"]


def test_manifest_is_byte_identical_across_runs(mixed, mixed_run, layout_factory):
    first, _ = mixed_run
    second = run_integrity(mixed.root, layout_factory("another-run"), config=IntegrityConfig(workers=1))
    assert second.manifest_digest == first.manifest_digest
    assert Path(second.manifest_path).read_bytes() == Path(first.manifest_path).read_bytes()


def test_xcom_value_is_only_paths_digests_counts(mixed_run):
    value = mixed_run[0].to_xcom()
    assert set(value) == {"stage", "manifest_path", "manifest_digest", "counts", "data_root", "extra"}
    assert all(isinstance(v, int) for v in value["counts"].values())
    assert json.loads(json.dumps(value)) == value
    assert Path(value["manifest_path"] + ".sha256").read_text().strip() == value["manifest_digest"]


@pytest.mark.parametrize(("policy", "status"),
                         [("accept", "accepted"), ("warn", "accepted"), ("quarantine", "quarantined")])
def test_background_and_empty_label_policies(mixed, layout_factory, policy, status):
    cfg = IntegrityConfig(background_images=policy, empty_labels=policy, workers=2)
    records = _records(run_integrity(mixed.root, layout_factory(), config=cfg))
    assert records["images/train/train_00017.jpg"].status == status
    assert records["labels/train/train_00016.txt"].status == status
    assert records["images/train/train_00016.jpg"].status == status  # the sample moves as a unit
    has_reason = bool(records["images/train/train_00017.jpg"].reasons)
    assert has_reason == (policy != "accept")


def test_fail_policy_writes_everything_then_raises(mixed, layout_factory):
    layout = layout_factory()
    with pytest.raises(IntegrityFailed, match="label_empty") as info:
        run_integrity(mixed.root, layout, config=IntegrityConfig(empty_labels="fail", workers=2))
    manifest = read_manifest(info.value.result.manifest_path, expected_digest=info.value.result.manifest_digest)
    assert manifest.header["verdict"] == "fail"
    assert manifest.by_path()["labels/train/train_00016.txt"].status == "quarantined"
    assert (layout.quarantine("integrity") / ("labels/train/train_00016.txt" + REASON_SUFFIX)).exists()


def test_exif_gps_and_orientation_are_recorded(dataset, layout_factory):
    from PIL import Image

    path = dataset / "images" / "train" / "train_00000.jpg"
    with Image.open(path) as img:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotated 90 degrees
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0)}  # GPS latitude
        img.save(path.with_name("gps.jpg"), format="JPEG", exif=exif)
    path.unlink()
    path.with_name("gps.jpg").rename(path)
    records = _records(run_integrity(dataset, layout_factory(), config=DEFAULT_CONFIG))
    rec = records["images/train/train_00000.jpg"]
    assert rec.meta["has_exif"] is True and rec.meta["has_gps"] is True and rec.meta["orientation"] == 6
    assert {r.code for r in rec.reasons} == {"exif_gps", "exif_orientation"} and rec.accepted
    strict = IntegrityConfig(exif_gps="quarantine", workers=2)
    assert _records(run_integrity(dataset, layout_factory(), config=strict))[rec.path].status == "quarantined"


def test_explicit_pixel_limit_fires_before_pillows_own(dataset, layout_factory):
    # 160x160 = 25,600 px: above max_pixels, below Pillow's own error threshold (2x): our check must catch it.
    cfg = IntegrityConfig(max_pixels=15_000, gx_dataset_policy="warn", workers=2)
    records = _records(run_integrity(dataset, layout_factory(), config=cfg))
    images = [r for r in records.values() if r.kind == "image"]
    assert images and all([r.code for r in r.reasons][0] == "decompression_bomb" for r in images)
    assert all("max_pixels 15000" in r.reasons[0].detail for r in images)


def test_unsafe_file_names_are_quarantined_not_crashing(dataset, layout_factory):
    (dataset / "images" / "train" / "back\\slash.jpg").write_bytes(b"x")
    os.close(os.open(os.path.join(os.fsencode(dataset / "images" / "train"), b"bad-\xff-name.jpg"),
                     os.O_CREAT | os.O_WRONLY, 0o644))
    layout = layout_factory()
    result = run_integrity(dataset, layout, config=DEFAULT_CONFIG)
    records = _records(result)
    unsafe = {p: r for p, r in records.items() if any(x.code == "unsafe_path" for x in r.reasons)}
    assert set(unsafe) == {"images/train/back\\slash.jpg", "unsafe-name:images/train/bad-%FF-name.jpg"}
    assert all(r.status == "quarantined" for r in unsafe.values())
    assert len(list((layout.quarantine("integrity") / "_unsafe_names").glob("*.reason.json"))) == 2


def test_missing_or_linked_data_yaml_is_a_clear_error(dataset, tmp_path, layout_factory):
    target = tmp_path / "elsewhere.yaml"
    (dataset / "data.yaml").rename(target)
    with pytest.raises(DatasetError, match="data.yaml is missing"):
        run_integrity(dataset, layout_factory(), config=DEFAULT_CONFIG)
    os.symlink(target, dataset / "data.yaml")
    with pytest.raises(DatasetError, match="not a regular file"):
        run_integrity(dataset, layout_factory(), config=DEFAULT_CONFIG)
    (dataset / "data.yaml").unlink()
    (dataset / "data.yaml").write_text("names:\n  0: face\n  2: plate\n")
    with pytest.raises(DatasetError, match="without gaps"):
        run_integrity(dataset, layout_factory(), config=DEFAULT_CONFIG)


def test_config_from_dict_is_strict():
    cfg = IntegrityConfig.from_dict({"allowed_formats": ["JPEG"], "background_images": "quarantine"})
    assert cfg.allowed_formats == ("JPEG",) and cfg.background_images == "quarantine"
    with pytest.raises(ValueError, match="unknown integrity config keys"):
        IntegrityConfig.from_dict({"max_pixel": 5})
    with pytest.raises(ValueError, match="must be one of"):
        IntegrityConfig(orphan_labels="ignore")
    with pytest.raises(ValueError, match="gx_dataset_policy"):
        IntegrityConfig(gx_dataset_policy="quarantine")
    with pytest.raises(ValueError, match="must be one of"):
        IntegrityConfig(invalid_labels="accept")  # only the background-image policies may accept silently
    # values rendered by non-native templates are converted; tamper_policy is a shorthand
    cfg = IntegrityConfig.from_dict({"max_pixels": "1000", "allowed_formats": "JPEG, PNG", "min_image_valid_rate": "0.2",
                                     "max_images_per_split": "None", "allowed_channels": "[1, 3]",
                                     "tamper_policy": "warn", "tamper_modified": "fail"})
    assert (cfg.max_pixels, cfg.allowed_formats, cfg.min_image_valid_rate, cfg.max_images_per_split,
            cfg.allowed_channels) == (1000, ("JPEG", "PNG"), 0.2, None, (1, 3))
    assert (cfg.tamper_added, cfg.tamper_modified) == ("warn", "fail")
    with pytest.raises(ValueError, match="not a valid int"):
        IntegrityConfig.from_dict({"max_pixels": "lots"})


def test_a_crashing_check_becomes_a_reason_not_a_crash(dataset, layout_factory, monkeypatch):
    # A real failure mode: a label that is valid UTF-8 but the check code hits an unexpected error.
    import secure_data.integrity.files as files

    def boom(data, *, n_classes, tolerance):
        raise MemoryError("simulated")

    monkeypatch.setattr(files, "inspect_label", boom)
    cfg = IntegrityConfig(gx_dataset_policy="warn", workers=2)  # every sample is lost: the GX gate would fail
    records = _records(run_integrity(dataset, layout_factory(), config=cfg))
    labels = [r for r in records.values() if r.kind == "label"]
    assert labels and all(r.status == "quarantined" and r.reasons[0].code == "check_error" for r in labels)
