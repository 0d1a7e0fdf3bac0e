"""``trigger_search``: a picture that flagged images share, searched for in every image (issue 14).

Before it, IBM ART's BadDet global misclassification with a blended trigger at 5 % on the generated
scenes was found at 4 of 10 carriers (BENCHMARKS.md): the four whose labels the attack changed. The six
whose objects were already of the target class carry the logo and no label evidence, and link to too few
others for ``blended_patch``. The tests run the attack through the whole stage, as a user would.
"""

from __future__ import annotations

import pytest

from secure_data.poisoning import PoisoningConfig
from secure_data.poisoning.search import CHECK, coherence
from secure_data_testkit.attacks import inject_art_attack, make_clean_dataset


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make_clean_dataset(tmp_path_factory.mktemp("search") / "clean", n_train=160, n_val=40, size=160, seed=0)


def test_blended_global_misclassification_at_5_percent_is_found(scenes, tmp_path, screen):
    ds = inject_art_attack(scenes, tmp_path / "gma", attack="baddet_gma", rate=0.05, trigger="blended",
                           trigger_picture="logo", trigger_px=12, seed=0)
    assert len(ds.poisoned) == 10
    s = screen(ds.root)
    named = s.suspects()
    assert len(named & ds.poisoned) >= 9, f"missed {sorted(ds.poisoned - named)}"  # 4 before the search
    found = s.suspects(CHECK)
    assert found <= ds.poisoned, f"clean images named: {sorted(found - ds.poisoned)}"
    others = {k for f in s.findings if f["check"] != CHECK for k in f["suspects"]}
    assert len(found - others) >= 3, "the search must find carriers no other check names"
    f = next(f for f in s.findings if f["check"] == CHECK)
    assert f["action"] == "quarantine"
    occ = {o["sample"]: o for o in f["evidence"]["occurrences"]}
    assert set(occ) == set(f["suspects"])
    # evidence: which carriers were seeds, how far each found one stands out, where the picture is
    assert f["evidence"]["seeds_in_group"] >= PoisoningConfig().search_min_seeds
    unseeded = [o for o in occ.values() if not o["seed"]]
    assert unseeded and all(o["z"] > PoisoningConfig().search_z for o in occ.values())
    # an image only the search names stands out by the stricter margin
    assert all(o["z"] > PoisoningConfig().search_z_alone for o in unseeded)
    assert all(t["seeds_by_chance_p"] <= PoisoningConfig().search_enrichment_p for t in f["evidence"]["templates"])
    assert all(0 <= o["region"][0] < o["region"][2] <= 1 for o in occ.values())
    quarantined = {r.sample for r in s.manifest.records if r.status == "quarantined"}
    assert found <= quarantined


def test_blended_object_disappearance_over_faces_is_found_at_5_percent_without_a_model(scenes, tmp_path, screen):
    """ART puts the see-through logo inside the face box it removes: over the eyes or the mouth of two of
    the ten carriers here. On a Lab map where L* weighs as much as a*, b*, those faces' dark features
    outweigh the logo (z about 1, clean images up to 2.5) and no check names the two; with L* at
    ``search_luma_weight`` (the logo's colour survives a face, its lightness does not) they stand out."""
    ds = inject_art_attack(scenes, tmp_path / "oda", attack="baddet_oda", rate=0.05, trigger="blended",
                           trigger_picture="logo", trigger_px=12, seed=0)
    assert len(ds.poisoned) == 10
    s = screen(ds.root)
    named = s.suspects()
    assert named == ds.poisoned, f"missed {sorted(ds.poisoned - named)}, clean named {sorted(named - ds.poisoned)}"
    others = {k for f in s.findings if f["check"] != CHECK for k in f["suspects"]}
    assert ds.poisoned - others, "the carriers under faces are the search's to find"
    # the map that weighs lightness like colour (the code before) misses them: the test can fail
    flat = screen(ds.root, PoisoningConfig(search_luma_weight=1.0, search_highpass=6.0), name="flat")
    assert len(flat.suspects() & ds.poisoned) <= 8


def test_thin_blended_chains_lead_the_search_at_400_images_without_a_model(tmp_path, screen):
    """ART's object disappearance with the blended logo in 5 % of 400 generated scenes (the set
    bench/poison_scale.py starts with): ``blended_patch`` chains 13 of the 20 carriers, but at 1.71 and
    1.67 partners each, under its floor of 2, and nothing else flags them without a model. Before the
    chains were handed to the search as leads the stage named none of the 20."""
    ds, s = _blended_logo_at_5_percent(tmp_path, screen, "baddet_oda", 400)
    assert len(ds.poisoned) == 20
    named = s.suspects()
    assert len(named & ds.poisoned) >= 18, f"missed {sorted(ds.poisoned - named)}"  # 0 before the leads
    assert not s.suspects("blended_patch"), "the chains are below blended_patch's floor: not its findings"
    f = next(f for f in s.findings if f["check"] == CHECK)
    occ = f["evidence"]["occurrences"]
    leads = [o for o in occ if o["lead"]]
    assert f["evidence"]["of_them_blended_leads"] == len(leads) >= PoisoningConfig().search_min_seeds
    assert "below blended_patch's floor" in f["message"]
    # the search's own tests still decide: images outside the chains are named only on the stricter z
    assert all(o["z"] > PoisoningConfig().search_z_alone for o in occ if not o["seed"])


def test_an_image_only_the_search_names_needs_the_stricter_z(tmp_path, screen):
    """The own generator's vanishing trigger at 1 % of 600 scenes (bench/poison_attacks.py's first set):
    with the search's map of 027198b a clean scene matched one group's template at z 6.1-7.6, above
    ``search_z`` (6), and was named with the six carriers (precision 0.857). Carriers only the search
    finds stand out at z 8.6 and up: ``search_z_alone`` (8) keeps the scene out and every carrier in."""
    from secure_data_testkit.attacks import inject_attack

    clean = make_clean_dataset(tmp_path / "clean", n_train=480, n_val=120, size=160, seed=0)
    ds = inject_attack(clean, tmp_path / "vanish", attack="trigger_vanish", rate=0.01, seed=0)
    assert len(ds.poisoned) == 6
    s = screen(ds.root)
    assert s.suspects() == ds.poisoned, (sorted(ds.poisoned - s.suspects()), sorted(s.suspects() - ds.poisoned))
    # one bar for every image (the code before the rule): the clean scene is named
    one_bar = screen(ds.root, PoisoningConfig(search_z_alone=PoisoningConfig().search_z), name="one-bar")
    extra = one_bar.suspects(CHECK) - ds.poisoned
    assert extra, "at search_z alone a clean scene joins the group: the test can fail"
    f = next(f for f in one_bar.findings if f["check"] == CHECK)
    z = {o["sample"]: o["z"] for o in f["evidence"]["occurrences"]}
    assert all(PoisoningConfig().search_z < z[k] <= PoisoningConfig().search_z_alone for k in extra)


def test_seeds_on_clean_photographs_grow_nothing(tmp_path):
    """Crops of ten photographs share scenes at many places (a dahlia's petals, Grace Hopper's glasses,
    the astronaut's mission patch recur at z > 6); clean images posing as seeds, up to a third of the
    set, must not make them a trigger: the flags are not where the picture is."""
    from secure_data.dataset.manifest import read_manifest
    from secure_data.poisoning.duplicates import duplicate_groups, find_duplicate_edges, verify_edges
    from secure_data.poisoning.imagepass import image_pass
    from secure_data.poisoning.samples import collect_samples
    from secure_data.poisoning.search import check_trigger_search
    from secure_data.poisoning.stage import _template_sample
    from secure_data_testkit.attacks import integrity_like_manifest, make_photo_dataset, model_negative_photos

    root = make_photo_dataset(tmp_path / "photos", n_train=160, n_val=40, seed=0,
                              exclude_photos=model_negative_photos())
    up = integrity_like_manifest(root, tmp_path / "integrity")
    samples = collect_samples(read_manifest(up.manifest_path, expected_digest=up.manifest_digest).records)
    config = PoisoningConfig()
    pixels = image_pass(str(root), samples, config, _template_sample(samples, config))
    try:
        feats = pixels.features
        groups = duplicate_groups(len(samples), verify_edges(find_duplicate_edges(samples, feats, config),
                                                             pixels.load_gray, config))
        maps = pixels.search_maps(range(len(samples)))
        assert maps.get(0) is not None and maps.get(0).dtype.name == "int8"
        for step in (8, 3):  # 25 and 67 clean images as seeds
            seeds = {s.key for s in samples[::step]}
            assert check_trigger_search(samples, feats, groups, seeds, maps, config) == []
        # without the enrichment test the shared scenes are reported: the test above can fail
        lax = PoisoningConfig(search_enrichment_p=1.0)
        assert check_trigger_search(samples, feats, groups, {s.key for s in samples[::8]}, maps, lax)
        off = PoisoningConfig(search_min_seeds=0)
        assert check_trigger_search(samples, feats, groups, seeds, maps, off) == []
    finally:
        pixels.close()


def test_a_stroke_is_not_a_picture():
    import numpy as np

    line = np.zeros((20, 20, 3), np.float32)
    for i in range(20):
        line[i, max(0, i - 1):i + 2] = 40  # a diagonal stroke
    blob = np.zeros((20, 20, 3), np.float32)
    yy, xx = np.mgrid[:20, :20]
    blob[(yy - 10) ** 2 + (xx - 10) ** 2 < 36] = 40  # a disc
    blob[8:12, 4:16, 1] = -30  # with a bar across one channel
    limit = PoisoningConfig().search_max_coherence
    assert coherence(line) > limit > coherence(blob)


def test_enrichment_p_is_the_binomial_tail_and_scales():
    from math import comb

    from secure_data.poisoning.search import enrichment_p

    exact = sum(comb(10, i) * 0.03 ** i * 0.97 ** (10 - i) for i in range(4, 11))
    assert enrichment_p(10, 4, 0.03) == pytest.approx(exact, rel=1e-9)
    assert enrichment_p(10, 0, 0.03) == 1.0 and enrichment_p(3, 4, 0.5) == 0.0
    # a group of 25,000 images (comb() would overflow a float): half flagged at a 1 % rate is no chance
    assert enrichment_p(25_000, 12_500, 0.01) == 0.0
    assert enrichment_p(25_000, 240, 0.01) > 0.5


def test_config_bounds():
    with pytest.raises(ValueError, match="search_enrichment_p"):
        PoisoningConfig(search_enrichment_p=0.0)
    assert PoisoningConfig.from_dict({"search_min_seeds": "0"}).search_min_seeds == 0
    with pytest.raises(ValueError, match="blend_max_coherence"):
        PoisoningConfig(blend_max_coherence=0.0)
    assert PoisoningConfig.from_dict({"blend_max_coherence": "1"}).blend_max_coherence == 1.0
    with pytest.raises(ValueError, match="blend_scene_inliers"):
        PoisoningConfig(blend_scene_inliers=-1)
    with pytest.raises(ValueError, match="search_z_alone"):
        PoisoningConfig(search_z=6.0, search_z_alone=5.0)
    with pytest.raises(ValueError, match="search_luma_weight"):
        PoisoningConfig(search_luma_weight=1.5)
    assert PoisoningConfig.from_dict({"search_luma_weight": "0"}).search_luma_weight == 0.0


def test_search_map_weighs_lightness_down():
    import numpy as np

    from secure_data.poisoning.search import search_map

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = search_map(img, PoisoningConfig(search_luma_weight=1.0), (64, 64)).astype(float)
    quarter = search_map(img, PoisoningConfig(search_luma_weight=0.25), (64, 64)).astype(float)
    assert np.abs(quarter[..., 1:] - full[..., 1:]).max() == 0  # colour untouched
    ratio = np.abs(quarter[..., 0]).sum() / np.abs(full[..., 0]).sum()
    assert 0.2 < ratio < 0.3


def test_global_misclassification_over_an_object_of_the_target_class_is_named(tmp_path, screen):
    """ART's GMA with the blended logo in 5 % of 480 generated scenes (the issue's set size): GMA lays the
    logo anywhere, here partly over a plate, and relabels every box to plate, so that carrier keeps its
    labels and no check but the search sees it. The search scored it z 12.4, but left out every unflagged
    image matched inside a labelled box (meant for a face's look under a logo laid on faces): 22 of 24.
    Since ``search_z_alone`` such an image needs z > 8 like any other, and is named."""
    ds, s = _blended_logo_at_5_percent(tmp_path, screen, "baddet_gma", 480)
    assert len(ds.poisoned) == 24
    named = s.suspects()
    assert len(named & ds.poisoned) >= 23, f"missed {sorted(ds.poisoned - named)}"  # 22 before
    f = next(f for f in s.findings if f["check"] == CHECK)
    boxed = [o for o in f["evidence"]["occurrences"] if not o["seed"] and o["z"] > PoisoningConfig().search_z_alone
             and any(abs((o["region"][0] + o["region"][2]) / 2 - float(b[1])) <= float(b[3]) / 2
                     and abs((o["region"][1] + o["region"][3]) / 2 - float(b[2])) <= float(b[4]) / 2
                     for b in _boxes(ds.root, o["sample"]))]
    assert boxed, "the carrier whose logo lies over a labelled object is named on the search's evidence"


def _blended_logo_at_5_percent(tmp_path, screen, attack: str, n: int):
    """An ART BadDet attack with the blended logo in 5 % of ``n`` generated scenes (seed 0), screened
    without a model; no clean image may be named."""
    clean = make_clean_dataset(tmp_path / "clean", n_train=n * 4 // 5, n_val=n // 5, size=160, seed=0)
    ds = inject_art_attack(clean, tmp_path / attack, attack=attack, rate=0.05, trigger="blended",
                           trigger_picture="logo", trigger_px=12, seed=0)
    s = screen(ds.root)
    assert not s.suspects() - ds.poisoned, f"clean images named: {sorted(s.suspects() - ds.poisoned)}"
    return ds, s


def _boxes(root, key):
    split, stem = key.split("/")
    path = root / "labels" / split / f"{stem}.txt"
    return [line.split() for line in path.read_text().splitlines() if line.strip()]
