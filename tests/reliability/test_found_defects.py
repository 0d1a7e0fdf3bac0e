"""Regression tests for defects the bad-input corpus found in other stages; every one is fixed.

Each test names the file, the input, what happened before the fix (in the present tense of the
report that found it) and what is expected now; each fails on the code before its fix. They are kept
apart from the corpus (secure_data_testkit.badinputs) so that the corpus test states the behaviour
of the whole corpus and these keep each defect's story with its test.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import RunLayout
from secure_data.integrity import IntegrityConfig
from secure_data_testkit.badinputs import inject_bad_inputs
from secure_data_testkit.datasets import make_yolo_dataset


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
    unpaired = _unpaired_for_the_trainer(root, _run(root, tmp_path))
    assert not unpaired, f"(image, label integrity paired, label Ultralytics reads): {unpaired}"


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
    unpaired = _unpaired_for_the_trainer(root, _run(root, tmp_path))
    assert not unpaired, f"(image, label integrity paired, label Ultralytics reads): {unpaired}"


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


def _deep_relpath(root: Path, target: int = 4080) -> str:
    """images/train/d…/d…/x.jpg whose absolute path under ``root`` is ``target`` bytes (< PATH_MAX 4096, so it
    exists and opens), while the same relative path under the run's quarantine folder is longer than 4096."""
    budget = target - len(str(root)) - 1 - len("images/train/") - len("x.jpg")
    parts = []
    while budget > 0:
        size = min(200, budget - 1)
        if size < 1:
            break
        parts.append("d" * size)
        budget -= size + 1
    return "/".join(["images/train", *parts, "x.jpg"])


@pytest.mark.parametrize("shape", ["long_name", "deep_path"])
def test_rejected_file_with_a_long_path_is_quarantined_not_a_crash(tmp_path, shape):
    """integrity/run.py ``_copy_to_quarantine`` -> dataset/quarantine.py -> dataset/atomic.py: the
    quarantine copy is written through a temp file named ``.<name>.<8 random>.tmp`` (name + 14 bytes)
    and a ``<name>.reason.json`` sidecar (+12, its temp file +26), so a rejected file whose name is
    longer than ~229 bytes (legal: NAME_MAX is 255), or whose path fits under the dataset root but not
    under ``<run>/quarantine/integrity/`` (PATH_MAX 4096), raises ``OSError: [Errno 36] File name too
    long`` out of ``run_integrity``: the whole stage crashes, no manifest is written.
    Input: a 254-byte name ``images/train/aaa….jpg`` holding text; or the same text at a 4050-byte path.
    Expected: the run completes and records the file as quarantined (its reason under
    ``_unsafe_names/`` if no copy can be written), or refuses such names up front as ``unsafe_path``.
    """
    root = make_yolo_dataset(tmp_path / "ds", n_train=4, n_val=1, seed=2)
    rel = "images/train/" + "a" * 250 + ".jpg" if shape == "long_name" else _deep_relpath(root)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(b"text, not an image")
    if shape == "long_name":  # a legal name (<= NAME_MAX) that is too long once ".reason.json" is added
        assert len(Path(rel).name) + len(".reason.json") > 255 >= len(Path(rel).name)
    else:  # a path that opens under the root but not under the run's quarantine folder
        assert len(str(root / rel)) < 4096 < len(str(tmp_path / "out/dag/run-xxxxxxxx/quarantine/integrity" / rel))
    manifest = _run(root, tmp_path)  # raised OSError before the fix
    record = manifest.by_path()[rel]
    assert not record.accepted and record.reasons


def test_accepted_image_with_a_long_name_survives_anonymize(tmp_path):
    """anonymize/shard.py ``_write_anonymized`` -> dataset/atomic.py ``atomic_write_bytes``: the output is
    written through ``.<name>.<8 random>.tmp``, so a 244-byte image name (accepted by integrity and
    poisoning) raises ``OSError: [Errno 36] File name too long`` in the anonymize writer thread and the
    shard task fails, on every retry. Input: ``images/train/bbb….jpg`` (240-byte stem) + its label.
    Expected: the image is anonymized (short temp names), or quarantined with a reason, or integrity
    refuses names the chain cannot carry.
    """
    from secure_data.anonymize import AnonymizeConfig, DetectorSpec, run_anonymize_shard
    from secure_data.poisoning import run_poisoning
    from secure_data_testkit.models import demo_detector

    root = make_yolo_dataset(tmp_path / "ds", n_train=4, n_val=1, seed=2)
    stem = "b" * 240
    (root / "images/train/train_00000.jpg").rename(root / f"images/train/{stem}.jpg")
    (root / "labels/train/train_00000.txt").rename(root / f"labels/train/{stem}.txt")
    from secure_data.integrity import run_integrity

    layout = RunLayout.for_run(tmp_path / "out", "dag", "run")
    integrity = run_integrity(root, layout, config=IntegrityConfig(workers=1))
    if not read_manifest(integrity.manifest_path).by_path()[f"images/train/{stem}.jpg"].accepted:
        return  # refused up front: fine
    poisoning = run_poisoning(integrity, layout)
    model, sha = demo_detector()
    config = AnonymizeConfig(detectors=(DetectorSpec(model_path=str(model), model_sha256=sha),), imgsz=160,
                             device="cpu")
    shard = run_anonymize_shard(poisoning, layout, config=config)  # raised OSError before the fix
    assert shard["counts"]["images"] == 5


def test_package_with_a_long_file_name_is_built_or_refused_clearly(tmp_path, vault_keys):
    """handoff/build.py (was package.py) ``_encrypt_source``: each file is written as ``data/<path>.enc``, so a 253-byte
    name (legal) becomes 257 bytes and ``build_package`` raises a bare ``OSError: [Errno 36]`` from the
    middle of the build. Input: a dataset whose image and label stems are 249 bytes.
    Expected: the package is built, or ``PackageFormatError`` names the file before anything is encrypted.
    """
    from secure_data.handoff.package import PackageFormatError, build_package, sources_from_directory

    sanitizer, _ = vault_keys
    root = make_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1, seed=2)
    stem = "c" * 249
    (root / "images/train/train_00000.jpg").rename(root / f"images/train/{stem}.jpg")
    (root / "labels/train/train_00000.txt").rename(root / f"labels/train/{stem}.txt")
    try:
        build_package(tmp_path / "packages", sources_from_directory(root), sanitizer, name="long-names")
    except PackageFormatError as exc:
        assert stem in str(exc)


def test_report_app_is_not_served_to_anonymous_callers(airflow_home, monkeypatch, tmp_path):
    """plugin.py ``_create_app``: the report app is mounted by Airflow's API server with ``app.mount``,
    which applies none of Airflow's authentication (Airflow documents that plugin FastAPI apps must
    authenticate themselves), and the app checks nothing. So with authentication on, an anonymous GET
    of ``/secure-data/reports/<dag_id>/<run_id>/`` (run ids are guessable: ``manual__<timestamp>``)
    returns the run report, its quarantine table (file paths, reasons), GX Data Docs and thumbnails,
    while ``/api/v2/dags`` returns 401. Expected: 401/403 without a valid Airflow token (e.g. a
    dependency on Airflow's ``get_user`` / the auth manager's JWT check, or ``requires_access_dag``).
    """
    from fastapi.testclient import TestClient

    from secure_data.dataset.stage import RunLayout

    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("SECURE_DATA_OUTPUT_ROOT", str(tmp_path / "runs"))
    layout = RunLayout.for_run(tmp_path / "runs", "secure_pretraining_sanitization", "manual__2026-11-27T00:00:00")
    layout.report.mkdir(parents=True)
    (layout.report / "index.html").write_text("<html>secure-data run report</html>")
    from airflow.api_fastapi.app import create_app

    client = TestClient(create_app())
    if client.get("/api/v2/dags").status_code != 401:
        pytest.skip("this process's auth manager lets anonymous callers in: nothing to compare with")
    response = client.get("/secure-data/reports/secure_pretraining_sanitization/manual__2026-11-27T00:00:00/")
    assert response.status_code in (401, 403), f"anonymous caller got {response.status_code}: {response.text[:80]}"


def test_one_label_with_many_boxes_does_not_make_every_clean_sample_an_outlier(tmp_path):
    """poisoning/boxchecks.py ``check_box_outliers``: the per-class median and MAD are taken over all
    *boxes*, so one label file with 10,000 identical tiny boxes (kind ``label_many_boxes``, valid
    syntax, accepted by integrity) is the whole distribution: MAD = 0 and every box of every clean
    sample gets |z| > 6. Observed: ~all clean samples of a 20-image dataset get a ``box_outlier``
    finding (warn by default; with the DAG's ``outlier_policy="quarantine"`` one supplier file
    quarantines the clean dataset and hides its own outlier among them). On the same clean dataset
    without that file there are none. Expected: at most a few clean samples flagged (e.g. statistics
    weighted per image, or a cap on boxes per image taken into the class statistics).
    """
    from secure_data.integrity import run_integrity
    from secure_data.poisoning import run_poisoning

    root = make_yolo_dataset(tmp_path / "ds", n_train=16, n_val=4, seed=11)
    clean = {f"{p.parent.name}/{p.stem}" for p in (root / "images").rglob("*.jpg")}
    inject_bad_inputs(root, kinds=["label_many_boxes"])
    layout = RunLayout.for_run(tmp_path / "out", "dag", "run")
    poisoning = run_poisoning(run_integrity(root, layout, config=IntegrityConfig(workers=1)), layout)
    flagged = set()
    with open(poisoning.extra["findings_path"], encoding="utf-8") as fh:
        for line in fh:
            finding = json.loads(line)
            if finding["check"] == "box_outlier":
                flagged |= set(finding["suspects"]) & clean
    assert len(flagged) <= 1, f"{len(flagged)} of {len(clean)} clean samples flagged as box outliers"
