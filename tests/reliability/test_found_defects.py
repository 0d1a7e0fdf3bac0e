"""Defects the bad-input corpus found in other stages. These tests FAIL until the stage is fixed.

Each test names the file, the input, what happens and what should happen. They are kept
out of the corpus (secure_data.testing.badinputs) so that the corpus test states the
behaviour that is correct today, and these state what is still wrong.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import RunLayout
from secure_data.integrity import IntegrityConfig
from secure_data.testing.badinputs import inject_bad_inputs
from secure_data.testing.datasets import make_yolo_dataset


def _unpaired_for_the_trainer(root: Path, manifest) -> list[tuple[str, str | None, str]]:
    """(image, label integrity paired it with, label Ultralytics will read) where the two differ."""
    from ultralytics.data.utils import img2label_paths

    accepted = [r for r in manifest.records if r.accepted]
    labels = {r.path for r in accepted if r.kind == "label"}
    by_sample = {r.sample: r.path for r in accepted if r.kind == "label"}
    out = []
    for image in (r for r in accepted if r.kind == "image"):
        trainer = Path(img2label_paths([f"{root}/{image.path}"])[0]).relative_to(root).as_posix()
        ours = by_sample.get(image.sample)
        if ours != (trainer if trainer in labels else None):
            out.append((image.path, ours, trainer))
    return out


def _run(root: Path, tmp_path: Path):
    from secure_data.integrity import run_integrity

    result = run_integrity(root, RunLayout.for_run(tmp_path / "out", "dag", "run"), config=IntegrityConfig(workers=1))
    return read_manifest(result.manifest_path, expected_digest=result.manifest_digest)


def test_label_with_uppercase_txt_suffix_is_not_paired_silently(tmp_path):
    """integrity/files.py + dataset/layout.py ``classify``: the suffix is lower-cased, so
    ``labels/train/x.TXT`` is a label of sample ``train/x`` and the pair is accepted without a reason.
    Ultralytics (``img2label_paths``) looks for ``labels/train/x.txt`` (case-sensitive on Linux), finds
    nothing, and trains the annotated image as a background image: its faces/plates become negatives.
    Expected: the .TXT file is not paired (e.g. ``unexpected_file``; the image then gets
    ``image_without_label``), or the pair carries a reason.
    """
    root = make_yolo_dataset(tmp_path / "ds", n_train=4, n_val=1, seed=2)
    (root / "labels/train/train_00000.txt").rename(root / "labels/train/train_00000.TXT")
    manifest = _run(root, tmp_path)
    assert not _unpaired_for_the_trainer(root, manifest)


def test_nested_images_folder_is_paired_like_the_trainer_pairs_it(tmp_path):
    """integrity/files.py ``_sample_of``: ``images/train/sub/images/x.jpg`` is paired with
    ``labels/train/sub/images/x.txt`` (first path component swapped), and both are accepted.
    Ultralytics replaces the LAST ``/images/`` of the path and reads ``images/train/sub/labels/x.txt``
    (which integrity would quarantine as ``unexpected_file`` anyway), so the image trains with no boxes.
    Expected: a path with a second ``images`` component under a split is refused or at least warned.
    """
    root = make_yolo_dataset(tmp_path / "ds", n_train=4, n_val=1, seed=2)
    for top, name in (("images", "train_00001.jpg"), ("labels", "train_00001.txt")):
        (root / top / "train/sub/images").mkdir(parents=True)
        (root / top / "train" / name).rename(root / top / "train/sub/images" / name)
    manifest = _run(root, tmp_path)
    assert not _unpaired_for_the_trainer(root, manifest)


def test_hostile_exif_does_not_flood_the_task_log(tmp_path):
    """integrity/images.py ``inspect_image`` (``img.getexif()``) and anonymize/codec.py
    ``read_orientation``: an EXIF IFD with 5000 entries that each claim data past the end of the file
    (kind ``exif_many_ifd_entries``, 40 kB) makes Pillow's TiffImagePlugin emit one UserWarning per
    entry: 5000 lines of task log per image and per stage, so 10,000 such images put 50 million lines
    into the integrity task's log. Expected: a handful of lines per file at most (e.g. Pillow's
    warnings suppressed around the EXIF read and the corruption recorded as one finding instead).
    """
    root = make_yolo_dataset(tmp_path / "ds", n_train=4, n_val=1, seed=2)
    inject_bad_inputs(root, kinds=["exif_many_ifd_entries"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's default: each distinct message is shown once
        _run(root, tmp_path)
    assert len(caught) <= 20, f"{len(caught)} warnings for one image, e.g. {caught[0].message}"
