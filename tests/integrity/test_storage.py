"""Object-storage sources (dataset/storage.py): mirrored into the run folder, hashed as copied, no links followed."""

from __future__ import annotations

import os
from pathlib import Path

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.storage import is_remote, load_mirror, mirror_source, source_label
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import run_integrity

CFG = IntegrityConfig(workers=2)


def test_source_label_drops_credentials():
    assert source_label("s3://AKIA:secret@bucket/prefix?X-Amz-Signature=abc#frag") == "s3://bucket/prefix"
    assert source_label("relative/dir") == os.path.abspath("relative/dir")
    assert is_remote("s3://b/p") and not is_remote("/data/set") and not is_remote(Path("/data"))


def test_file_objectstoragepath_is_mirrored_and_checked(dataset, tmp_path, layout_factory):
    from airflow.sdk import ObjectStoragePath

    (tmp_path / "outside.txt").write_text("OUTSIDE-BYTES")
    os.symlink(tmp_path / "outside.txt", dataset / "images" / "train" / "escape.jpg")
    os.symlink(tmp_path, dataset / "labels" / "linkdir")
    local = run_integrity(dataset, layout_factory("local"), config=CFG)

    layout = layout_factory("remote")
    remote = run_integrity(ObjectStoragePath(f"file://{dataset}"), layout, config=CFG)
    assert Path(remote.data_root) == layout.root / "source" / "data"
    a = read_manifest(local.manifest_path)
    b = read_manifest(remote.manifest_path, expected_digest=remote.manifest_digest)
    assert b.header["mirrored"] is True and b.header["source"] == f"file://{dataset}"
    # the same records, whether read in place or from the mirror
    assert [r.to_dict() for r in a.records] == [r.to_dict() for r in b.records]
    assert b.by_path()["images/train/escape.jpg"].reasons[0].code == "symlink"
    assert b.by_path()["labels/linkdir"].reasons[0].code == "symlink"
    assert not (layout.root / "source" / "data" / "images" / "train" / "escape.jpg").exists()
    assert not (layout.root / "source" / "data" / "labels" / "linkdir").exists()
    for path in layout.root.rglob("*"):
        if path.is_file():
            assert b"OUTSIDE-BYTES" not in path.read_bytes()


def test_a_uri_string_works_too(dataset, layout_factory):
    result = run_integrity(f"file://{dataset}", layout_factory(), config=CFG)
    assert result.counts["quarantined"] == 0 and result.counts["files"] == 17


def test_retry_reuses_the_mirror_and_rehashes_it(dataset, layout_factory):
    layout = layout_factory("retry")
    first = run_integrity(f"file://{dataset}", layout, config=CFG)
    mirror = load_mirror(layout.root / "source")
    victim = mirror.data_root / "images" / "val" / "val_00000.jpg"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")  # local tampering with the mirror
    (mirror.data_root / "images" / "val" / "planted.jpg").write_bytes(b"planted")
    second = run_integrity(f"file://{dataset}", layout, config=CFG)
    records = read_manifest(second.manifest_path).by_path()
    assert "mirror_mismatch" in [r.code for r in records["images/val/val_00000.jpg"].reasons]
    assert records["images/val/val_00000.jpg"].status == "quarantined"
    assert records["images/val/planted.jpg"].reasons[0].code == "mirror_mismatch"
    assert second.manifest_digest != first.manifest_digest


def test_mirror_index_records_hashes_as_copied(dataset, tmp_path):
    import hashlib

    mirror = mirror_source(f"file://{dataset}", tmp_path / "m", workers=2)
    assert set(mirror.files) == {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file()}
    for rel, f in mirror.files.items():
        assert f.sha256 == hashlib.sha256((dataset / rel).read_bytes()).hexdigest()
    assert load_mirror(tmp_path / "m") == mirror
