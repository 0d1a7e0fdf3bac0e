"""Checks that hold against attacks this project did not write (issue 14).

* ``repeated_patch``: a picture pasted at random positions with no label change (nothing for the
  label-seeded ``trigger_patch`` to start from), and IBM ART's BadDet object-disappearance attack.
* presence checks (labels vs the pinned domain model): pure comparison, and ART's object
  disappearance / generation on generated scenes with the demo detector.
* leakage verification: a pHash-0 pair is never dropped; copies of low-texture pictures (too few
  ORB corners) are confirmed by thumbnail correlation, different low-texture pictures are not.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from secure_data.poisoning import PoisoningConfig
from secure_data.poisoning.duplicates import DupEdge, verify_edges
from secure_data_testkit.attacks import inject_art_attack, make_clean_dataset, near_copy, trigger_image


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return make_clean_dataset(tmp_path_factory.mktemp("generalize") / "clean", n_train=160, n_val=40, seed=21)


def _paste_without_label_change(root, out, rate: float, seed: int = 0) -> set[str]:
    """ART's insert_image (random position, opaque) into train images; labels untouched (clean-label)."""
    import shutil

    import cv2
    from art.attacks.poisoning.perturbations import insert_image

    shutil.copytree(root, out)
    picture = trigger_image(out.parent / "trigger.png", "checker", seed)
    images = sorted((out / "images" / "train").glob("*.jpg"))
    rng = np.random.default_rng(seed)
    chosen = [images[i] for i in rng.permutation(len(images))[: round(rate * 200)]]
    np.random.seed(seed)
    for path in chosen:
        img = cv2.imread(str(path))[..., ::-1].astype(np.float32) / 255
        out_img = insert_image(img, backdoor_path=str(picture), random=True, size=(12, 12), mode="RGB", blend=1.0)
        cv2.imwrite(str(path), np.clip(np.rint(out_img * 255), 0, 255).astype(np.uint8)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
    return {f"train/{p.stem}" for p in chosen}


def test_repeated_patch_needs_no_label_evidence(small_root, tmp_path, screen):
    carriers = _paste_without_label_change(small_root, tmp_path / "pasted", rate=0.1)
    s = screen(tmp_path / "pasted")
    found = s.suspects("repeated_patch")
    assert len(found & carriers) >= 0.95 * len(carriers), sorted(carriers - found)
    assert found <= carriers, sorted(found - carriers)
    f = next(f for f in s.findings if f["check"] == "repeated_patch")
    assert f["action"] == "quarantine" and f["evidence"]["member_documents"] >= 5
    assert f["evidence"]["position_spread"] > 0.1  # random positions, not a fixed corner
    assert {o["sample"] for o in f["evidence"]["occurrences"]} == set(f["suspects"])
    # the label-seeded check has nothing to start from here
    assert not s.suspects("trigger_patch")


def test_repeated_patch_is_quiet_on_clean_data(small_root, screen):
    assert not screen(small_root).suspects()


def test_art_object_disappearance_is_found_without_a_model(clean_root, tmp_path, screen):
    # ART's ODA removes the face boxes of the images it triggers; images that keep a plate are not
    # label-anomalous to any other check, so the label-seeded trigger_patch alone found 19 of 40.
    ds = inject_art_attack(clean_root, tmp_path / "oda", attack="baddet_oda", rate=0.1, trigger="patch")
    assert len(ds.poisoned) == 40
    s = screen(ds.root)
    flagged = s.suspects()
    assert len(flagged & ds.poisoned) >= 0.95 * len(ds.poisoned), sorted(ds.poisoned - flagged)
    assert len(flagged & ds.poisoned) >= 0.9 * len(flagged), sorted(flagged - ds.poisoned)


# ---------------------------------------------------------------- presence (labels vs detections)

def test_presence_comparison_names_each_signature():
    from secure_data.poisoning.presence import compare_with_detections

    config = PoisoningConfig()
    labels = [(0, (10, 10, 50, 60)), (1, (100, 100, 160, 120)), (0, (200, 10, 240, 60))]
    dets = [
        (11, 11, 49, 61, 0.9, 0),  # agrees with label 0
        (101, 99, 158, 121, 0.85, 0),  # label 1 is a plate, the model is sure it is a face
        (60, 150, 100, 200, 0.8, 0),  # an object no label covers
        (300, 300, 310, 310, 0.2, 1),  # too weak to claim anything
    ]  # label 2 has nothing under it
    got = compare_with_detections(labels, dets, config)
    assert [d["detection"] for d in got["unlabelled_object"]] == [[60, 150, 100, 200]]
    assert [b["box"] for b in got["phantom_box"]] == [2]
    assert [(b["box"], b["detected_class"]) for b in got["detector_class_conflict"]] == [(1, 0)]
    agree = compare_with_detections(labels[:1], dets[:1], config)
    assert not any(agree.values())


@pytest.fixture(scope="module")
def model_config():
    from secure_data_testkit.models import demo_detector

    path, sha = demo_detector()
    return PoisoningConfig(backbone_model=str(path), backbone_model_sha256=sha, backbone_device="cpu")


# unlabelled_object at the calibrated score 0.75 (0.5 named 8.5 % of clean photographs) finds 15-16 of these
# 20 object-disappearance images alone (this test asked for 16 at the old 0.5): the calibration's price (BENCHMARKS.md)
@pytest.mark.parametrize("attack, check, recall", [("baddet_oda", "unlabelled_object", 0.7),
                                                   ("baddet_oga", "phantom_box", 0.8)])
def test_art_label_attacks_are_named_by_the_model(small_root, tmp_path, screen, model_config, attack, check, recall):
    ds = inject_art_attack(small_root, tmp_path / attack, attack=attack, rate=0.1, trigger="blended")
    s = screen(ds.root, model_config)
    named = s.suspects(check)
    assert len(named & ds.poisoned) >= recall * len(ds.poisoned), (check, sorted(ds.poisoned - named))
    assert len(named & ds.poisoned) >= 0.9 * len(named), sorted(named - ds.poisoned)
    f = next(f for f in s.findings if f["check"] == check)
    assert f["action"] == "quarantine" and f["evidence"]["items"]


def test_presence_checks_are_quiet_on_clean_photographs(tmp_path_factory, screen, model_config):
    """Real photographs (crops of the 19 shipped in wheels, with drawn objects): the demo detector, trained
    on generated scenes, sees faces and objects in them the labels do not hold, and misses drawn objects on
    busy backgrounds. At the thresholds calibrated on another seed (bench/poison_calibrate.py) and with
    phantom boxes corroborated by the class template, <= 0.5 % of clean samples are named (17 of 200 before).
    """
    from secure_data_testkit.attacks import make_photo_dataset

    root = make_photo_dataset(tmp_path_factory.mktemp("photos") / "clean", n_train=160, n_val=40, seed=0)
    s = screen(root, model_config)
    presence = {k for c in ("unlabelled_object", "phantom_box", "detector_class_conflict") for k in s.suspects(c)}
    assert len(presence) <= 1, presence  # <= 0.5 % of 200


def test_phantom_box_needs_the_class_template_to_agree():
    from types import SimpleNamespace as NS

    from secure_data.poisoning.presence import _corroborated_phantoms

    config = PoisoningConfig()
    items = [{"box": 0, "class": 0}, {"box": 1, "class": 0}, {"box": 2, "class": 0}]
    box_fits = {0: NS(own=0.05), 1: NS(own=0.7)}  # box 2: no template fit (the model's word stands)
    kept = _corroborated_phantoms(items, box_fits, config)
    assert [k["box"] for k in kept] == [0, 2]
    assert kept[0]["template_fit"] == 0.05


# ---------------------------------------------------------------- leakage verification

def _smooth_picture(seed: int, size: int = 160):
    """A low-texture picture: a gradient with two soft blobs (few ORB corners)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 60 + 120 * (rng.uniform(0.2, 1) * xx + rng.uniform(0.2, 1) * yy) / 2
    for _ in range(2):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2)
        base += rng.uniform(-60, 60) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    return cv2.GaussianBlur(np.clip(base, 0, 255).astype(np.uint8), (0, 0), 2)


def _reencoded(gray, scale: float = 0.96, quality: int = 80):
    import cv2

    h, w = gray.shape
    small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return cv2.imdecode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)


def test_low_texture_copy_is_confirmed_and_different_pictures_are_not():
    from secure_data.poisoning.duplicates import thumbnail_match

    config = PoisoningConfig()
    a, b = _smooth_picture(1), _smooth_picture(2)
    copy = _reencoded(a)
    grays = {0: a, 1: copy, 2: b}
    kept = verify_edges([DupEdge(0, 1, "near", 3, False), DupEdge(0, 2, "near", 6, False)], grays.get, config)
    assert [(e.a, e.b) for e in kept] == [(0, 1)]
    assert kept[0].inliers < config.dup_min_inliers  # ORB alone could not confirm it
    assert kept[0].correlation >= config.dup_min_correlation and kept[0].transform is not None
    assert thumbnail_match(a, b, mirrored=False)[0] < config.dup_min_correlation


def test_phash_zero_pair_is_never_dropped():
    config = PoisoningConfig()
    a, b = _smooth_picture(3), _smooth_picture(4)
    kept = verify_edges([DupEdge(0, 1, "near", 0, False)], {0: a, 1: b}.get, config)
    assert [(e.a, e.b, e.distance) for e in kept] == [(0, 1, 0)]
    assert kept[0].transform is None  # kept on the hash alone: no transform is claimed


# ---------------------------------------------------------------- leaks beyond the pHash radius

def _textured(seed: int):
    """A 160x240 grey picture full of corners (random rectangles): ORB finds hundreds of keypoints."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((160, 240), 128, np.uint8)
    for _ in range(120):
        x, y = (int(v) for v in rng.integers(0, 230, size=1)), int(rng.integers(0, 150))
        x = next(x)
        w, h = (int(v) for v in rng.integers(4, 20, size=2))
        cv2.rectangle(img, (x, y), (x + w, y + h), int(rng.integers(0, 256)), -1)
    return img


def _far_copy(sources, kind: str, radius: int, seed: int):
    """(source, copy bytes): a copy made with one transform whose pHash is more than ``radius`` bits from
    its source's (the first source, in order, for which one of 20 draws gets that far)."""
    import cv2

    from secure_data.poisoning.phash import hamming, phash

    def ph(data: bytes) -> int:
        return phash(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE))

    rng = np.random.default_rng(seed)
    for path in sources:
        src = path.read_bytes()
        for _ in range(20):
            data, _ = near_copy(src, [], kind, rng, crop_max=0.05)
            if hamming(ph(data), ph(src)) > radius:
                return path, data
    raise AssertionError(f"no {kind} copy beyond {radius} bits")


def test_leaks_beyond_the_phash_radius_are_proposed_by_layout_and_verified(small_root, tmp_path, screen):
    """Crop (5 %/side), colour shift and shift+brighten+re-encode copies 9+ pHash bits away: no pHash
    candidate, so the code before the layout nearest-neighbour proposals could not find them."""
    import shutil

    root = Path(shutil.copytree(small_root, tmp_path / "leaky"))
    config = PoisoningConfig()
    leaked = set()
    train = sorted((root / "images/train").glob("*.jpg"))
    for n, kind in enumerate(("crop", "crop", "colour", "colour", "shift_mix", "shift_mix")):
        src, data = _far_copy(train[20 * n:], kind, config.near_dup_radius, n)
        (root / f"images/val/val_{n:05d}.jpg").write_bytes(data)
        shutil.copy(root / f"labels/train/{src.stem}.txt", root / f"labels/val/val_{n:05d}.txt")
        leaked.add(f"val/val_{n:05d}")
    s = screen(root, config)
    assert s.suspects("split_leakage") == leaked
    pairs = [p for f in s.findings if f["check"] == "split_leakage" for p in f["evidence"]["pairs"]]
    assert all(p["proposed_by"] == "layout nearest neighbour" and p["hamming"] > config.near_dup_radius
               and p["frame_overlap"] >= config.leak_min_overlap for p in pairs), pairs
    # the same data with the proposals off: the old behaviour, none found
    off = screen(root, replace(config, leak_neighbours=0), name="off")
    assert not off.suspects("split_leakage") & leaked


def test_layout_proposal_needs_frames_that_cover_each_other():
    """Two views of one picture overlapping by half verify with ORB, but are not a copy of each other."""
    import cv2

    from secure_data.poisoning.duplicates import frame_overlap

    config = PoisoningConfig()
    full = _textured(2)
    left, right = full[:, :160], full[:, 80:]  # share half of each frame
    copy = cv2.resize(left[4:-4, 6:-5], (160, 160), interpolation=cv2.INTER_AREA)  # ~4 %/side crop
    kept = verify_edges([DupEdge(0, 1, "near", 20, False, proposal="layout", similarity=0.7),
                         DupEdge(0, 2, "near", 14, False, proposal="layout", similarity=0.8)],
                        {0: left, 1: right, 2: copy}.get, config)
    assert [(e.a, e.b) for e in kept] == [(0, 2)], kept
    assert kept[0].overlap >= config.leak_min_overlap
    assert frame_overlap((1, 0, 0.5, 0, 1, 0)) == pytest.approx(0.5)  # shifted by half a frame


def test_scaled_crop_of_a_photograph_with_half_the_orb_evidence_is_verified_under_orbs_transform(tmp_path):
    """A val image that is a 5 %-per-side crop of a train photograph, resized back to full frame: ORB finds 34
    agreeing inliers (the threshold is 40) and the thumbnail's shift search cannot align a *scaled* copy
    (0.935), so the code before dropped it (the benchmark's one missed crop leak on photographs, seed 0). The
    thumbnail judged under ORB's own transform agrees (0.98+); a half-frame view of the same photograph,
    which ORB also links, stays out: its frames do not cover each other."""
    import cv2

    from secure_data.poisoning.duplicates import frame_overlap, thumbnail_match, transform_match, verify_pair
    from secure_data_testkit.attacks import make_photo_dataset, model_negative_photos

    config = PoisoningConfig()
    root = make_photo_dataset(tmp_path / "ph", n_train=121, n_val=0, seed=0, exclude_photos=model_negative_photos())
    src = (root / "images/train/train_00120.jpg").read_bytes()
    data, _ = near_copy(src, [], "crop", np.random.default_rng(0), crop_max=0.05)
    a = cv2.imdecode(np.frombuffer(src, np.uint8), cv2.IMREAD_GRAYSCALE)
    b = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    inliers, transform = verify_pair(a, b, mirrored=False, min_inliers=config.dup_min_inliers)
    assert config.dup_min_inliers // 2 <= inliers < config.dup_min_inliers  # what made it a partial case
    assert thumbnail_match(a, b, mirrored=False)[0] < config.dup_min_correlation
    assert transform_match(a, b, transform) >= config.dup_min_correlation + 0.01
    # a view of the same photograph shifted by a third of the frame: same pixels, frames not covering
    h, w = a.shape
    view = cv2.resize(a[:, w // 3:], (w, h), interpolation=cv2.INTER_AREA)
    images = {0: a, 1: b, 2: view}
    kept = verify_edges([DupEdge(0, 1, "near", 14, False, proposal="layout", similarity=0.8),
                         DupEdge(0, 2, "near", 20, False, proposal="layout", similarity=0.7)], images.get, config)
    assert [(e.a, e.b) for e in kept] == [(0, 1)], kept
    assert kept[0].overlap >= config.leak_min_overlap and kept[0].correlation >= config.dup_min_correlation
    assert frame_overlap(kept[0].transform) == pytest.approx(kept[0].overlap, abs=1e-3)


def test_shared_background_with_different_objects_is_not_a_leak():
    from secure_data.dataset.manifest import FileRecord
    from secure_data.poisoning.duplicates import check_duplicates, duplicate_groups
    from secure_data.poisoning.samples import Sample

    def sample(key, boxes):
        split = key.split("/")[0]
        rec = FileRecord(path=f"images/{key}.jpg", sha256=key, size=1, kind="image", split=split, sample=key)
        return Sample(key=key, split=split, image=rec, label=None, boxes=tuple(boxes))

    samples = [sample("train/a", [(0, 0.2, 0.2, 0.1, 0.1)]), sample("val/b", [(1, 0.7, 0.7, 0.1, 0.1)]),
               sample("val/c", [(0, 0.21, 0.2, 0.1, 0.1)])]
    ident = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    edges = [DupEdge(0, 1, "near", 20, False, 90, ident, proposal="layout", similarity=0.7, overlap=0.9),
             DupEdge(0, 2, "near", 20, False, 90, ident, proposal="layout", similarity=0.7, overlap=0.9)]
    found = check_duplicates(samples, [None] * 3, edges, duplicate_groups(3, edges), {}, PoisoningConfig())
    assert [(f.check, list(f.suspects)) for f in found] == [("split_leakage", ["val/c"])]


def test_layout_search_goes_sub_quadratic_and_keeps_the_copies(monkeypatch):
    """Past _EXACT_MAX_PAIRS the nearest-neighbour search uses an inverted file; forced here on a small set,
    it must return the same nearest neighbours for near copies (the exact search is the reference)."""
    import secure_data.poisoning.duplicates as dup

    rng = np.random.default_rng(3)
    basis = rng.standard_normal((8, 63))
    refs = rng.standard_normal((4000, 8)) @ basis + 0.7 * rng.standard_normal((4000, 63))
    refs = (refs / np.linalg.norm(refs, axis=1, keepdims=True)).astype(np.float32)
    src = rng.choice(4000, 300, replace=False)
    q = refs[src] + 0.05 * rng.standard_normal((300, 63))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    exact = dup.nearest_layouts(q, None, refs, 2)
    monkeypatch.setattr(dup, "_EXACT_MAX_PAIRS", 0)
    ivf = dup.nearest_layouts(q, q[:, ::-1].copy(), refs, 2)
    assert (exact[0][:, 0] == src).mean() == 1.0
    assert (ivf[0][:, 0] == src).mean() >= 0.97
    assert ivf[0].shape == (300, 2) and np.all(np.diff(ivf[1], axis=1) <= 0)  # best first


def test_two_crops_of_one_photograph_with_different_objects_are_not_a_flipped_copy():
    """Overlapping crops of one photograph (one mirrored) with different objects drawn on them verify as
    near-duplicates (same background, ORB agrees) but share no box: not a label conflict, not a copy. A
    re-encoded copy of the first with its classes flipped still is. At 400 crops of ten photographs three
    such pairs were named (1.5 % of a clean set) before the per-box agreement; 0 since."""
    import cv2

    from secure_data.dataset.manifest import FileRecord
    from secure_data.poisoning.duplicates import check_duplicates, duplicate_groups, with_box_agreement
    from secure_data.poisoning.samples import Sample
    from secure_data_testkit.attacks import _load_photos
    from secure_data_testkit.datasets import Box, _draw_object

    photo = _load_photos()[0]
    h, w = photo.shape[:2]
    side = int(min(h, w) * 0.6)
    background = cv2.resize(photo[:side, :side], (224, 224), interpolation=cv2.INTER_AREA)

    def picture(img, boxes, seed):
        img = img.copy()
        rng = np.random.default_rng(seed)
        for box in boxes:
            _draw_object(img, box, rng)
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        return data, [tuple(float(v) for v in box.yolo_line(224, 224).split()) for box in boxes]

    first, boxes_a = picture(background, [Box(0, 30, 40, 80, 100), Box(1, 140, 150, 200, 175)], 1)
    second, boxes_b = picture(np.ascontiguousarray(background[:, ::-1]),
                              [Box(0, 120, 30, 170, 90), Box(1, 20, 170, 80, 195)], 2)
    flipped, boxes_c = near_copy(first, boxes_a, "reencode", np.random.default_rng(0))
    boxes_c = [(1 - int(b[0]), *b[1:]) for b in boxes_c]  # every class flipped
    grays = {i: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_GRAYSCALE)
             for i, d in enumerate((first, second, flipped))}

    def sample(key, boxes):
        rec = FileRecord(path=f"images/{key}.jpg", sha256=key, size=1, kind="image", split="train", sample=key)
        return Sample(key=key, split="train", image=rec, label=None, boxes=tuple(tuple(b) for b in boxes))

    samples = [sample("train/a", boxes_a), sample("train/b", boxes_b), sample("train/c", boxes_c)]
    config = PoisoningConfig()
    edges = verify_edges([DupEdge(0, 1, "near", 6, True), DupEdge(0, 2, "near", 2, False)], grays.get, config)
    assert [(e.a, e.b) for e in edges] == [(0, 1), (0, 2)]  # both verify: same background, ORB agrees
    edges = with_box_agreement(edges, samples, grays.get, config)
    views, copy = edges
    assert max(v for v in views.agreement[0] + views.agreement[1]) < config.dup_box_min_agreement, views.agreement
    assert min(v for v in copy.agreement[0] + copy.agreement[1]) >= 0.9, copy.agreement

    def named(cfg, es):
        found = check_duplicates(samples, [None] * 3, es, duplicate_groups(3, es), {"train/c": 1}, cfg)
        return {(f.check, k) for f in found for k in f.suspects}

    assert named(config, edges) == {("duplicate_label_conflict", "train/c")}
    # without the per-box agreement (the code before): the two views are a "conflict" as well
    lax = replace(config, dup_box_min_agreement=0.0)
    unmeasured = with_box_agreement([replace(e, agreement=None) for e in edges], samples, grays.get, lax)
    assert all(e.agreement is None for e in unmeasured)
    assert ("duplicate_label_conflict", "train/b") in named(lax, unmeasured)


def test_mirrored_relabelled_copies_do_not_make_other_faces_a_trigger(tmp_path, screen):
    """Label-flip copies mirrored (10 % of 200 generated scenes, the outside suite's `label_flip` / `flip`
    row): the mirrored faces, labelled as plates, make their own block codes enriched among the flagged
    images, and ``trigger_patch`` named 9 clean images whose faces share 5 or 6 of those codes (precision
    0.69). An unflagged image matched inside one of its labelled objects now needs a patch's density."""
    from secure_data_testkit.attacks import inject_attack

    clean = make_clean_dataset(tmp_path / "clean", n_train=160, n_val=40, size=160, seed=0)
    ds = inject_attack(clean, tmp_path / "flip", attack="label_flip", rate=0.1, seed=0, copy_kinds=("flip",),
                       crop_max=0.05)
    assert len(ds.poisoned) == 20
    s = screen(ds.root)
    assert s.suspects() == ds.poisoned, (sorted(ds.poisoned - s.suspects()), sorted(s.suspects() - ds.poisoned))
    bar = PoisoningConfig().trigger_min_median_hits
    for f in s.findings:
        if f["check"] == "trigger_patch":  # what it still reports: flagged images, or dense matches
            assert all(o["seed"] or o["hits"] >= bar for o in f["evidence"]["occurrences"])
