"""Paths the trainer and the later stages must be able to use: pairing as Ultralytics pairs, and names
the chain can carry (NAME_MAX / PATH_MAX after the suffixes it appends)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from secure_data.dataset.atomic import NAME_MAX, atomic_directory, atomic_write_bytes
from secure_data.dataset.layout import (
    MAX_NAME_BYTES,
    MAX_RELPATH_BYTES,
    classify,
    nested_images_problem,
    path_length_problem,
    trainer_label_relpath,
)
from secure_data.dataset.manifest import FileRecord, Reason, read_manifest
from secure_data.dataset.quarantine import REASON_SUFFIX, hashed_relpath, quarantine_file
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import run_integrity

CFG = IntegrityConfig(workers=2)


def _records(result):
    return read_manifest(result.manifest_path, expected_digest=result.manifest_digest).by_path()


# ------------------------------------------------------------------------------------------ pairing


@pytest.mark.parametrize("rel", [
    "images/train/x.jpg", "images/train/a/b.JPG", "images/train/x.tar.jpeg", "images/train/.hidden.png",
    "images/train/sub/images/x.jpg", "images/images/x.jpg", "images/train/labels/x.jpg",
    "images/train/a.b/x.webp", "images/train/images.x/y.jpg", "images/train/sp ace/ü.jpg",
])
def test_trainer_label_path_is_ultralytics_own_rule(tmp_path, rel):
    from ultralytics.data.utils import img2label_paths

    root = tmp_path / "with/images/in/its/name"  # a root that itself contains /images/
    expected = Path(img2label_paths([f"{root}/{rel}"])[0]).relative_to(root).as_posix()
    assert trainer_label_relpath(rel) == expected


def test_label_suffix_is_case_sensitive_image_suffix_is_not():
    assert classify("labels/train/x.txt") == ("label", "train")
    assert classify("labels/train/x.TXT") == ("other", "train")
    assert classify("labels/train/x.Txt") == ("other", "train")
    assert classify("images/train/x.JPG") == ("image", "train")


def test_nested_images_folder_is_detected():
    assert nested_images_problem("images/train/a/b.jpg") is None
    assert nested_images_problem("images/train/labels/b.jpg") is None  # Ultralytics swaps the first one here
    problem = nested_images_problem("images/train/sub/images/x.jpg")
    assert problem and "images/train/sub/labels/x.txt" in problem
    assert nested_images_problem("images/images/x.jpg")  # a split called "images"


def test_uppercase_label_suffix_is_not_paired(dataset, layout_factory):
    (dataset / "labels/train/train_00000.txt").rename(dataset / "labels/train/train_00000.TXT")
    records = _records(run_integrity(dataset, layout_factory(), config=CFG))
    label = records["labels/train/train_00000.TXT"]
    assert label.status == "quarantined" and label.kind == "other" and label.sample is None
    assert label.reasons[0].code == "unexpected_file" and "'labels/train/train_00000.txt'" in label.reasons[0].detail
    image = records["images/train/train_00000.jpg"]
    assert image.accepted and [r.code for r in image.reasons] == ["image_without_label"]


def test_nested_images_folder_is_quarantined_with_its_label(dataset, layout_factory):
    for top, name in (("images", "train_00001.jpg"), ("labels", "train_00001.txt")):
        (dataset / top / "train/sub/images").mkdir(parents=True)
        (dataset / top / "train" / name).rename(dataset / top / "train/sub/images" / name)
    records = _records(run_integrity(dataset, layout_factory(), config=CFG))
    image = records["images/train/sub/images/train_00001.jpg"]
    label = records["labels/train/sub/images/train_00001.txt"]
    assert image.status == label.status == "quarantined"
    assert image.reasons[0].code == "nested_images_folder"
    assert "images/train/sub/labels/train_00001.txt" in image.reasons[0].detail
    assert [r.code for r in label.reasons] == ["sample_image_rejected"]
    # the usual layout keeps its sample keys
    assert records["images/train/train_00002.jpg"].sample == "train/train_00002"
    assert records["labels/train/train_00002.txt"].sample == "train/train_00002"


# ------------------------------------------------------------------------------------------ path lengths


def test_path_length_limits():
    ok = "images/train/" + "a" * (MAX_NAME_BYTES - 4) + ".jpg"
    assert path_length_problem(ok) is None
    long_name = "images/train/" + "a" * (MAX_NAME_BYTES - 3) + ".jpg"
    assert "at most 229 bytes" in path_length_problem(long_name)
    assert path_length_problem("images/train/" + "é" * 115 + ".jpg")  # 119 characters, 234 bytes: bytes count
    deep = "images/train/" + "d/" * (MAX_RELPATH_BYTES // 2) + "x.jpg"
    assert f"at most {MAX_RELPATH_BYTES} bytes" in path_length_problem(deep)
    assert path_length_problem("images/train/x.jpg", run_root="/r/" + "o" * 4000) is None
    assert "run folder" in path_length_problem("images/train/x.jpg", run_root="/r/" + "o" * 4050)


def test_atomic_writes_take_a_name_up_to_name_max(tmp_path):
    name = "n" * NAME_MAX
    atomic_write_bytes(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    assert os.listdir(tmp_path) == [name]  # the temporary file was renamed, nothing left over
    with atomic_directory(tmp_path / ("d" * NAME_MAX)) as building:
        (building / "f").write_bytes(b"x")
    assert (tmp_path / ("d" * NAME_MAX) / "f").read_bytes() == b"x"


def test_quarantine_stores_a_too_long_name_under_a_hashed_name(tmp_path):
    path = "images/train/" + "q" * 250 + ".jpg"
    record = FileRecord(path=path, sha256="0" * 64, size=4, kind="image", split="train", sample="train/x")
    reason_file = quarantine_file(tmp_path, record, b"data", [Reason("path_too_long", "too long", "integrity")])
    assert reason_file == tmp_path / (hashed_relpath(path) + REASON_SUFFIX)
    doc = json.loads(reason_file.read_text())
    assert doc["path"] == path and doc["stored_as"] == hashed_relpath(path) and doc["copied"] is True
    assert (tmp_path / doc["stored_as"]).read_bytes() == b"data"
    # a dataset folder called _unsafe_names cannot overwrite hashed entries
    planted = FileRecord(path=hashed_relpath(path), sha256="1" * 64, size=1, kind="other")
    quarantine_file(tmp_path, planted, b"x", [Reason("unexpected_file", "planted", "integrity")])
    assert (tmp_path / doc["stored_as"]).read_bytes() == b"data"


def test_names_the_chain_cannot_carry_are_quarantined_up_front(dataset, layout_factory):
    stem = "b" * 240  # 244-byte names: legal, but ".reason.json" and temp files would not fit
    (dataset / "images/train/train_00000.jpg").rename(dataset / f"images/train/{stem}.jpg")
    (dataset / "labels/train/train_00000.txt").rename(dataset / f"labels/train/{stem}.txt")
    os.symlink("/etc/hostname", dataset / "labels/train" / ("l" * 250 + ".txt"))  # not read, reason only
    layout = layout_factory()
    result = run_integrity(dataset, layout, config=CFG)
    records = _records(result)
    qroot = layout.quarantine("integrity")
    for rel in (f"images/train/{stem}.jpg", f"labels/train/{stem}.txt"):
        rec = records[rel]
        assert rec.status == "quarantined" and [r.code for r in rec.reasons] == ["path_too_long"]
        doc = json.loads((qroot / (hashed_relpath(rel) + REASON_SUFFIX)).read_text())
        assert doc["path"] == rel and doc["copied"] is True
        assert hashlib.sha256((qroot / doc["stored_as"]).read_bytes()).hexdigest() == rec.sha256
    link = records["labels/train/" + "l" * 250 + ".txt"]
    assert link.status == "quarantined" and link.reasons[0].code == "symlink"
    assert (qroot / (hashed_relpath(link.path) + REASON_SUFFIX)).is_file()
    assert result.counts["accepted"] + result.counts["quarantined"] == result.counts["files"]


def test_a_path_too_long_for_the_mirror_is_refused_not_copied(dataset, layout_factory):
    rel = "images/train/" + "m" * 240 + ".jpg"
    (dataset / "images/train/train_00000.jpg").rename(dataset / rel)
    layout = layout_factory()
    records = _records(run_integrity(f"file://{dataset}", layout, config=CFG))
    assert records[rel].status == "quarantined" and records[rel].reasons[0].code == "path_too_long"
    assert not any(p.name.startswith("mmm") for p in (layout.root / "source").rglob("*"))


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 5000])
def test_read_once_keeps_bytes_up_to_the_limit_and_hashes_everything(tmp_path, size):
    from secure_data.integrity.files import read_once

    blob = os.urandom(size)
    (tmp_path / "f.bin").write_bytes(blob)
    data, sha, got = read_once(tmp_path, "f.bin", 1000)
    assert sha == hashlib.sha256(blob).hexdigest() and got == size
    assert data == (blob if size <= 1000 else None)
