"""``blended_patch``: IBM ART's BadDet triggers blended at 0.5 at random positions (issue 14).

Before this check, no check of the stage without a model found a blended object-disappearance trigger
(BENCHMARKS.md: 0 of 20 at 10 % on the generated scenes): the grey block codes of ``trigger_patch`` and
``repeated_patch`` never recur exactly under a see-through picture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from secure_data.poisoning import PoisoningConfig
from secure_data.poisoning.blended import CHECK, chroma_codes
from secure_data_testkit.attacks import inject_art_attack, make_clean_dataset


@pytest.fixture(scope="module")
def blended_root(tmp_path_factory):
    return make_clean_dataset(tmp_path_factory.mktemp("blended") / "clean", n_train=160, n_val=40, seed=21)


def test_blended_object_disappearance_is_found_without_a_model(blended_root, tmp_path, screen):
    ds = inject_art_attack(blended_root, tmp_path / "oda", attack="baddet_oda", rate=0.1, trigger="blended",
                           trigger_picture="logo", trigger_px=12)
    assert len(ds.poisoned) == 20
    s = screen(ds.root)
    found = s.suspects(CHECK)
    assert len(found & ds.poisoned) >= 0.8 * len(ds.poisoned), sorted(ds.poisoned - found)
    assert found <= ds.poisoned, sorted(found - ds.poisoned)
    f = next(f for f in s.findings if f["check"] == CHECK)
    assert f["action"] == "warn" and f["evidence"]["member_documents"] >= 5
    occ = f["evidence"]["occurrences"]
    assert {o["sample"] for o in occ} == set(f["suspects"])
    # evidence: each carrier names partner images that hold the same picture, and how many codes agree
    assert all(o["partners"] and o["matches"] >= PoisoningConfig().blend_min_matches for o in occ)
    assert f["evidence"]["position_spread"] > 0.1  # random positions
    assert f["evidence"]["median_coherence"] < PoisoningConfig().blend_max_coherence / 2  # a picture, not a stroke


def test_chroma_codes_skip_boxes_and_can_be_off(blended_root):
    import cv2
    import numpy as np

    img = cv2.imread(str(sorted((blended_root / "images" / "train").glob("*.jpg"))[0]))
    h, w = img.shape[:2]
    box = (0, 0.5, 0.5, 0.5, 0.5)
    got = chroma_codes(img, [box], PoisoningConfig(), (w, h))
    assert len(got) and got.in_box.any() and not got.in_box.all()
    inside = (np.abs(got.xs - w / 2) < w / 4) & (np.abs(got.ys - h / 2) < h / 4)
    assert got.in_box[inside].all()
    from secure_data.poisoning.features import extract_features

    off = extract_features("k", cv2.imencode(".png", img)[1].tobytes(), [box],
                           PoisoningConfig(blend_min_matches=0), {})
    assert off.chroma is None


def test_line_ends_at_one_angle_are_not_a_picture(tmp_path, screen):
    """Clean generated scenes (seed 0, 400 images): eight images whose drawn lines end at nearly one angle
    and colour link through 6-8 colour codes each (BENCHMARKS.md, 1 % rows). Before the stroke test
    ``blended_patch`` named all eight (2 % of a clean set); their windows' structure-tensor coherence is
    0.55-0.81, a real trigger's 0.04-0.26."""
    clean = make_clean_dataset(tmp_path / "clean", n_train=320, n_val=80, seed=0)
    s = screen(clean)
    assert not s.suspects(CHECK), s.suspects(CHECK)
    lax = screen(clean, PoisoningConfig(blend_max_coherence=1.0), name="lax")  # the test off: the group is back
    assert len(lax.suspects(CHECK)) >= 5
    f = next(f for f in lax.findings if f["check"] == CHECK)
    assert f["evidence"]["median_coherence"] is None  # not measured while off


def test_views_of_one_scene_are_one_document(tmp_path, screen):
    """200 crops of four shipped photographs (the dahlia, the astronaut, the cat, the coffee cup: 50 crops
    each), nothing attacked. Crops of one photograph hold its colour structure at one scale, and their
    links formed patterns like a pasted picture's: before ``scene_documents`` ``blended_patch`` named 16
    of them and ``trigger_search``, seeded by those, 17 (400 crops of ten photographs: 43 images, 10.8 %).
    Pairs with ORB agreement outside the linked region are now one document."""
    from secure_data_testkit.attacks import PHOTO_SOURCES, make_photo_dataset

    keep = {"flower.jpg", "astronaut.png", "chelsea.png", "coffee.png"}
    others = {Path(rel).name for _, rel in PHOTO_SOURCES} - keep
    root = make_photo_dataset(tmp_path / "crops", n_train=160, n_val=40, size=224, seed=0, exclude_photos=others)
    s = screen(root)
    assert not s.suspects(CHECK) and not s.suspects("trigger_search"), (s.suspects(CHECK), s.suspects("trigger_search"))
    lax = screen(root, PoisoningConfig(blend_scene_inliers=0), name="lax")  # scenes not merged: the patterns are back
    assert len(lax.suspects(CHECK)) >= 5
