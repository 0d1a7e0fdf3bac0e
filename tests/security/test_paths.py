"""A data supplier cannot make the chain read outside the dataset.

Regressions of issue 13: ``layout.py`` checked each component with ``lstat`` and the caller re-opened
the full path, so swapping a directory for a symlink between the two recorded files from outside the
dataset (1-4 of 400 tries); hard links to files outside the dataset were read and copied into
quarantine; list-file and empty splits in data.yaml were refused only by the trainer; a reference
manifest was trusted without its digest.
"""

from __future__ import annotations

import os
import threading

import pytest

from secure_data.dataset.layout import UnsafePathError, open_inside
from secure_data.dataset.stage import RunLayout
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.files import check_entry, list_entries, read_once
from secure_data.integrity.run import DatasetError, run_integrity
from secure_data_testkit.datasets import make_yolo_dataset

SECRET = b"SECRET-outside-the-dataset-"
ROUNDS = 400


def _flip_forever(parent, name, outside, stop):
    """Swap ``parent/name`` between the real directory and a symlink to ``outside`` until ``stop``."""
    real, link = parent / name, parent / f".{name}.real"
    while not stop.is_set():
        os.rename(real, link)
        os.symlink(outside, real)
        os.unlink(real)
        os.rename(link, real)


def test_symlink_swap_race_never_reads_outside_the_dataset(tmp_path):
    root = tmp_path / "dataset"
    sub = root / "images" / "train" / "sub"
    sub.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(8):
        (sub / f"f{i}.jpg").write_bytes(b"inside-" + bytes([i]))
        (outside / f"f{i}.jpg").write_bytes(SECRET + bytes([i]))
    stop = threading.Event()
    flipper = threading.Thread(target=_flip_forever, args=(sub.parent, "sub", outside, stop), daemon=True)
    flipper.start()
    leaked, reads = [], 0
    try:
        for _ in range(ROUNDS):
            try:
                entries = list_entries(root)
            except OSError:
                continue
            for entry in entries:
                if entry.state != "regular":
                    continue
                try:
                    data, _, _ = read_once(root, entry.path, 1 << 20)
                except (OSError, UnsafePathError):
                    continue  # refused or vanished mid-swap: never followed
                reads += 1
                if data and data.startswith(SECRET):
                    leaked.append(entry.path)
    finally:
        stop.set()
        flipper.join()
    assert reads > 0, "the race never let a read through: the test proves nothing"
    assert not leaked, f"read {len(leaked)} file(s) from outside the dataset: {leaked[:5]}"


def test_open_inside_refuses_symlinks_on_the_way_and_at_the_end(tmp_path):
    root = tmp_path / "dataset"
    (root / "images").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.jpg").write_bytes(SECRET)
    os.symlink(tmp_path / "outside", root / "images" / "train")
    os.symlink(tmp_path / "outside" / "x.jpg", root / "images" / "y.jpg")
    with pytest.raises(UnsafePathError, match="symlink"):
        open_inside(root, "images/train/x.jpg")
    with pytest.raises(UnsafePathError, match="symlink"):
        open_inside(root, "images/y.jpg")
    with pytest.raises(UnsafePathError):
        open_inside(root, "../outside/x.jpg")


def _layout(tmp_path, name="run"):
    return RunLayout(tmp_path / name)


def test_hard_link_is_quarantined_under_its_own_code_and_never_copied(tmp_path):
    root = make_yolo_dataset(tmp_path / "dataset", n_train=4, n_val=2, seed=3)
    secret = tmp_path / "shadow.jpg"
    secret.write_bytes(SECRET + b"hard")
    os.link(secret, root / "images" / "train" / "linked.jpg")
    entry = next(e for e in list_entries(root) if e.path == "images/train/linked.jpg")
    result = check_entry(root, entry, IntegrityConfig(workers=1), 1)
    assert [f.code for f in result.findings] == ["hard_link"] and not result.readable

    stage = run_integrity(root, _layout(tmp_path), config=IntegrityConfig(workers=2))
    from secure_data.dataset.manifest import read_manifest

    record = read_manifest(stage.manifest_path, expected_digest=stage.manifest_digest).by_path()[
        "images/train/linked.jpg"]
    assert record.status == "quarantined" and "hard_link" in [r.code for r in record.reasons]
    copied = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and SECRET in p.read_bytes()]
    assert not copied, copied


def _yaml_with(root, **splits):
    lines = [line for line in (root / "data.yaml").read_text().splitlines()
             if line.split(":")[0] not in splits]
    lines += [f"{k}: {v}" for k, v in splits.items()]
    (root / "data.yaml").write_text("\n".join(lines) + "\n")


def test_list_file_split_is_refused_at_the_start(tmp_path):
    root = make_yolo_dataset(tmp_path / "dataset", n_train=4, n_val=2, seed=3)
    (root / "list.txt").write_text("/etc/passwd\n")
    _yaml_with(root, train="list.txt")
    with pytest.raises(DatasetError, match="list-file splits are refused"):
        run_integrity(root, _layout(tmp_path), config=IntegrityConfig(workers=1))


def test_empty_split_named_in_data_yaml_is_refused_at_the_start(tmp_path):
    root = make_yolo_dataset(tmp_path / "dataset", n_train=4, n_val=2, seed=3)
    (root / "images" / "test").mkdir()
    _yaml_with(root, test="images/test")
    with pytest.raises(DatasetError, match="holds no images"):
        run_integrity(root, _layout(tmp_path), config=IntegrityConfig(workers=1))
    assert not (tmp_path / "run" / "integrity" / "manifest.jsonl").exists()


def test_reference_manifest_requires_its_digest(tmp_path):
    root = make_yolo_dataset(tmp_path / "dataset", n_train=4, n_val=2, seed=3)
    first = run_integrity(root, _layout(tmp_path, "first"), config=IntegrityConfig(workers=2))
    with pytest.raises(DatasetError, match="without reference_digest"):
        run_integrity(root, _layout(tmp_path, "second"), config=IntegrityConfig(workers=1),
                      reference_manifest=first.manifest_path)
