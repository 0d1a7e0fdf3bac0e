"""Trigger search: a picture that images flagged by other checks share, looked for in every image.

``blended_patch`` needs a picture's codes to link each carrier to several others; at low poisoning
rates a blended trigger (BadDet's logo at alpha 0.5) links too few, and carriers whose labels the
attack left unchanged (global misclassification onto objects already of the target class) carry no
label evidence at all. This check starts from the images other checks already name (the **seeds**:
label anomalies, presence conflicts, patches, spectral outliers; and ``blended_patch``'s *leads*, the
carriers of colour-code chains too thin for it to report) and asks whether they share a picture that
also sits, unflagged, in other images:

1. **Candidates**: links between a seed and any other image where at least ``search_min_matches``
   colour block codes agree at one translation in one compact region (``blended.matched_regions``
   restricted to pairs with a seed; no popularity filter), seed-to-seed links first, then strongest
   first.
2. **Template**: the mean of the two linked windows on the search map (Lab, smoothed by
   ``blend_blur``, minus its ``search_highpass`` Gaussian: a blend's background is low-frequency, the
   picture's structure is not; L* scaled by ``search_luma_weight``: under a see-through picture the
   lightness of what it covers, a face's eyes and mouth, mixes with the picture's, while its colour
   survives such features: at equal weight two of ten logos laid on faces scored z about 1). A one-dimensional template (structure-tensor coherence above
   ``search_max_coherence``: a stroke or an edge) is not a picture and is not searched.
3. **Scan** every image once with the template (zero-mean normalised cross-correlation, best place
   per image: linear in the number of images per candidate). The images whose best score is a robust
   outlier (``(s - median) / (1.4826 MAD) > search_z``), the two the template came from left out, make
   a new template (their mean: the background averages away, the picture stays), and the whole set is
   scanned again; its outliers, now the two included, are the group. An image no other check names
   joins it only above ``search_z_alone`` (8): named on this evidence alone, it needs a clearer margin
   (chance matches of clean scenes reach z 6.1-7.6 on the own-generator sets; carriers only the search
   finds, 8.6 and up there; on 480 generated scenes one of 24 GMA carriers scored 8.0 and is missed),
   inside a labelled box or not (GMA lays its trigger over objects already of its target class too).
4. **Confirmed** when the group spans at least ``patch_min_images`` unrelated documents (duplicate
   groups) and at most ``patch_max_image_fraction`` of them; the mean of its windows (the template's
   two images left out) is itself two-dimensional; fewer than half of its matches sit inside a
   labelled box (an object's own look); and it holds at least ``search_min_seeds`` seeds, more than
   chance allows: at the set's flag rate, that many flagged images among the group's would happen with
   probability at most ``search_enrichment_p`` (binomial tail). A trigger is where the flags are; two
   crops of one photograph, a texture or an object's part recur just as well but hold flagged images
   only at the set's rate (checked with clean images posing as seeds, tests/poisoning).

Every image of a confirmed group is named with its score, z and place; groups sharing images are one
finding. Costs at most ``search_max_scans`` scans of the whole set (one or two per candidate) and
a search map per image (int8, at most ``search_max_side`` pixels a side) in an unnamed temporary file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.samples import Sample
from secure_data.poisoning.triggers import _inside_any_box, _label_profile

if TYPE_CHECKING:
    from secure_data.poisoning.features import SampleFeatures

CHECK = "trigger_search"
log = logging.getLogger(__name__)
_MAD_FLOOR = 1e-3


def search_map(img, config: PoisoningConfig, size: tuple[int, int]):
    """int8 search map (h, w, 3) of a decoded BGR image: smoothed Lab minus its low frequencies, L* weighed
    by ``search_luma_weight``.

    ``size`` = (width, height) at analysis resolution; the map is at most ``search_max_side`` a side."""
    import cv2
    import numpy as np

    if img.ndim != 3:
        return None
    w, h = size
    scale = min(1.0, config.search_max_side / max(w, h))
    w, h = max(1, round(w * scale)), max(1, round(h * scale))
    if (img.shape[1], img.shape[0]) != (w, h):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float32)
    if config.blend_blur > 0:
        lab = cv2.GaussianBlur(lab, (0, 0), config.blend_blur)
    hp = lab - cv2.GaussianBlur(lab, (0, 0), config.search_highpass)
    if config.search_luma_weight != 1.0:
        hp[..., 0] *= config.search_luma_weight
    return np.clip(np.rint(hp), -127, 127).astype(np.int8)


def coherence(t) -> float:
    """Structure-tensor coherence of a (h, w, c) window: 1 for a line or an edge, near 0 for a 2-D picture."""
    import cv2
    import numpy as np

    t = np.ascontiguousarray(t, np.float32)
    gx = cv2.Sobel(t, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(t, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    return float(np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / (jxx + jyy + 1e-9))


def window_box(region: Sequence[float], scale: float, half: float) -> tuple[int, int, int, int]:
    """(x, y, width, height) on a search map of a region of block positions (analysis pixels: x1, y1, x2,
    y2), widened by ``half`` (half a block) on each side; ``scale``: search-map pixels per analysis pixel."""
    x, y = int(max(0, (region[0] - half) * scale)), int(max(0, (region[1] - half) * scale))
    return (x, y, int(round((region[2] - region[0] + 2 * half) * scale)),
            int(round((region[3] - region[1] + 2 * half) * scale)))


def median_coherence(windows: Sequence[Any]) -> float | None:
    """Median :func:`coherence` of the windows at least 4 pixels a side (None: no such window)."""
    import numpy as np

    values = [coherence(w) for w in windows if w is not None and min(w.shape[:2]) >= 4]
    return float(np.median(values)) if values else None


def enrichment_p(n: int, k: int, rate: float) -> float:
    """P(at least k of n images are flagged) if flags fell on images at the set's flag rate, independently
    of the picture (binomial upper tail, summed in log space: a group may hold thousands of images)."""
    from math import exp, lgamma, log, log1p

    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    rate = min(max(rate, 1e-12), 1.0)
    if rate >= 1.0:
        return 1.0
    lp, lq, lfn = log(rate), log1p(-rate), lgamma(n + 1)
    total = sum(exp(lfn - lgamma(i + 1) - lgamma(n - i + 1) + i * lp + (n - i) * lq) for i in range(k, n + 1))
    return min(1.0, total)


class _Scanner:
    def __init__(self, maps: Any, n: int) -> None:
        self.maps, self.n = maps, n

    def window(self, i: int, xy: tuple[int, int], th: int, tw: int):
        m = self.maps.get(i)
        if m is None:
            return None
        x, y = xy
        win = m[y:y + th, x:x + tw]
        return win.astype("float32") if win.shape[:2] == (th, tw) else None

    def scan(self, template) -> tuple[Any, list]:
        import cv2
        import numpy as np

        th, tw = template.shape[:2]
        scores = np.full(self.n, np.nan)
        places: list = [None] * self.n
        t = np.ascontiguousarray(template, np.float32)
        for i in range(self.n):
            m = self.maps.get(i)
            if m is None or m.shape[0] < th or m.shape[1] < tw:
                continue
            r = cv2.matchTemplate(m.astype(np.float32), t, cv2.TM_CCOEFF_NORMED)
            _, best, _, where = cv2.minMaxLoc(r)
            if np.isfinite(best):
                scores[i], places[i] = float(best), (int(where[0]), int(where[1]))
        return scores, places


def _outliers(scores, z: float) -> tuple[set[int], float, float, Any]:
    """Images whose best score is a robust outlier, the scores' median and scaled MAD, every image's z.

    (x - median) / (1.4826 MAD); ``boxchecks.robust_z`` writes the same as 0.6745 (x - median) / MAD,
    which differs in the fifth digit and would change the z values findings already report."""
    import numpy as np

    v = scores[~np.isnan(scores)]
    if len(v) < 3:
        return set(), 0.0, 0.0, scores
    med = float(np.median(v))
    mad = max(1.4826 * float(np.median(np.abs(v - med))), _MAD_FLOOR)
    zs = (scores - med) / mad
    return set(np.flatnonzero(np.nan_to_num(zs, nan=-np.inf) > z).tolist()), med, mad, zs


def check_trigger_search(
    samples: Sequence[Sample],
    feats: Sequence[SampleFeatures],
    docs: Sequence[int],
    seed_keys: set[str] | frozenset[str],
    maps: Any,
    config: PoisoningConfig,
    class_names: Mapping[int, str] | None = None,
    leads: set[str] | frozenset[str] = frozenset(),
    load_gray: Callable[[int], Any] | None = None,
) -> list[Finding]:
    """``maps.get(i)`` -> the int8 search map of sample ``i`` (or None); see the module docstring.

    ``leads``: the seeds that no check reported, only ``blended_patch`` chained below its partner floor;
    they seed like the others and are marked as such in the evidence. A group that holds fewer than
    ``search_min_seeds`` other seeds must also span ``patch_min_images`` scenes: its members are compared
    pairwise with ORB outside the picture (``blended.SceneViews``, ``load_gray``: verification greys),
    and views of one scene count once (crops of one photograph chain below the floor just as thinly)."""
    from secure_data.poisoning.blended import matched_regions

    names = class_names or {}
    n_docs = len(set(docs))
    seeds = {i for i, s in enumerate(samples) if s.key in seed_keys}
    lead_idx = {i for i, s in enumerate(samples) if s.key in leads}
    views = None
    if (not config.search_enabled or maps is None
            or len(seeds) < config.search_min_seeds or n_docs < config.patch_min_images):
        return []
    loose = replace(config, blend_min_matches=config.search_min_matches, blend_popular_docs=2)
    # links between two seeds first (a picture both flagged images hold), then by the codes that agree
    links = sorted(matched_regions(feats, docs, loose, only=seeds),
                   key=lambda lk: (-(lk["a"] in seeds and lk["b"] in seeds), -lk["matches"], lk["a"], lk["b"]))
    scanner = _Scanner(maps, len(samples))
    half = config.block_px / 2
    explained: set[int] = set()
    groups: list[dict] = []
    scans = 0
    for link in links:
        if scans >= config.search_max_scans:
            break
        a, b = link["a"], link["b"]
        if a in explained and b in explained:
            continue
        ma, mb = maps.get(a), maps.get(b)
        if ma is None or mb is None:
            continue
        s = ma.shape[1] / feats[a].analysis_size[0]  # analysis pixels -> search-map pixels (one scale per set)
        ax, ay, tw, th = window_box(link["region_a"], s, half)
        bx, by, _, _ = window_box(link["region_b"], s, half)
        wa, wb = scanner.window(a, (ax, ay), th, tw), scanner.window(b, (bx, by), th, tw)
        if wa is None or wb is None or min(th, tw) < 6:
            continue
        template = (wa + wb) / 2
        if coherence(template) > config.search_max_coherence:
            continue
        scans += 1
        scores, places = scanner.scan(template)
        first, _, _, _ = _outliers(scores, config.search_z)
        first -= {a, b}
        if len(first) < 2:
            continue
        # the group's own picture, without the two images the candidate came from: they are judged by it too
        wins = [w for j in sorted(first) if (w := scanner.window(j, places[j], th, tw)) is not None]
        scans += 1
        scores, places = scanner.scan(sum(wins) / len(wins))
        group, med, mad, zs = _outliers(scores, config.search_z)
        group = {j for j in group if places[j] is not None}
        others = [w for j in sorted(group - {a, b}) if (w := scanner.window(j, places[j], th, tw)) is not None]
        if not others or coherence(sum(others) / len(others)) > config.search_max_coherence:
            continue
        regions = {}
        for j in group:
            mh, mw = maps.get(j).shape[:2]
            x, y = places[j]
            regions[j] = (round(x / mw, 4), round(y / mh, 4), round((x + tw) / mw, 4), round((y + th) / mh, 4))
        boxed = {j for j in group if _inside_any_box(regions[j], samples[j].boxes)}
        if len(boxed) >= 0.5 * len(group):
            continue  # the recurring picture is an object's own look
        # an image no other check names is named on this z alone: a stricter bar than the group's. Inside a
        # labelled box too: global misclassification lays its trigger anywhere, over an object already
        # of the target class as well (an object's look matching the picture stays below this bar)
        group = {j for j in group if j in seeds or zs[j] > config.search_z_alone}
        member_docs = {docs[j] for j in group}
        if len(member_docs) < config.patch_min_images or len(member_docs) > config.patch_max_image_fraction * n_docs:
            continue
        in_group = len(group & seeds)
        p_chance = enrichment_p(len(group), in_group, len(seeds) / len(samples))
        if in_group < config.search_min_seeds or p_chance > config.search_enrichment_p:
            continue  # the flagged images are not where the picture is: a shared scene, not a trigger
        scenes = None
        if len(group & (seeds - lead_idx)) < config.search_min_seeds and load_gray is not None \
                and config.blend_scene_inliers > 0:
            from secure_data.poisoning.blended import SceneViews

            views = views or SceneViews(feats, config, load_gray)
            scenes = _scene_count(sorted(group), regions, docs, feats, views)
            if scenes < config.patch_min_images:
                log.info("trigger_search: a group of %d images (%d leads) spans %d scenes: views of a few scenes",
                         len(group), len(group & lead_idx), scenes)
                continue  # views of a few scenes, chained by their own colour structure
        explained |= group
        groups.append({"members": group, "seed_pair": (a, b), "template_px": (tw, th), "median": med, "mad": mad,
                       "p": p_chance, "scenes": scenes,
                       "scores": {j: (round(float(scores[j]), 4), round(float(zs[j]), 2), regions[j]) for j in group}})
    log.info("trigger_search: %d seeds, %d candidate links, %d scans of %d images, %d groups",
             len(seeds), len(links), scans, len(samples), len(groups))
    return _findings(samples, groups, seeds, config, names, n_docs, leads)


def _scene_count(members: Sequence[int], regions: Mapping[int, tuple], docs: Sequence[int], feats, views) -> int:
    """Documents among ``members`` with views of one scene merged (union-find over member pairs: ORB agreement
    outside the picture's window, ``SceneViews.same_scene``)."""
    parent = {docs[j]: docs[j] for j in members}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n, a in enumerate(members):
        w, h = feats[a].analysis_size
        r = regions[a]
        region = (r[0] * w, r[1] * h, r[2] * w, r[3] * h)
        for b in members[n + 1:]:
            if find(docs[a]) != find(docs[b]) and views.same_scene(a, region, b):
                parent[find(docs[a])] = find(docs[b])
    return len({find(docs[j]) for j in members})


def _findings(samples, groups, seeds, config, names, n_docs, leads=frozenset()) -> list[Finding]:
    """Groups that share an image are one finding."""
    from secure_data.poisoning.blended import _components

    edges = [(g, h) for g in range(len(groups)) for h in range(g + 1, len(groups))
             if groups[g]["members"] & groups[h]["members"]]
    findings = []
    for comp in _components(len(groups), edges):
        members: dict[int, tuple] = {}
        for g in comp:
            for j, row in groups[g]["scores"].items():
                if j not in members or row[1] > members[j][1]:
                    members[j] = row
        idx = sorted(members)
        rest = [s for j, s in enumerate(samples) if j not in members]
        evidence = {
            "members": len(idx),
            "seeds_in_group": sum(j in seeds for j in idx),
            "of_them_blended_leads": sum(samples[j].key in leads for j in idx),
            "templates": [{"from": [samples[groups[g]["seed_pair"][0]].key, samples[groups[g]["seed_pair"][1]].key],
                           "size_px": list(groups[g]["template_px"]), "median_score": round(groups[g]["median"], 4),
                           "mad": round(groups[g]["mad"], 4), "seeds_by_chance_p": float(f"{groups[g]['p']:.3g}"),
                           "scenes": groups[g]["scenes"]}
                          for g in comp],
            "seed_rate": round(len(seeds) / len(samples), 4),
            "z_threshold": config.search_z,
            "z_threshold_alone": config.search_z_alone,
            "documents": n_docs,
            "labels_with_picture": _label_profile([samples[j] for j in idx], names),
            "labels_without_picture": _label_profile(rest, names),
            "occurrences": [{"sample": samples[j].key, "seed": j in seeds, "lead": samples[j].key in leads,
                             "score": members[j][0], "z": members[j][1], "region": list(members[j][2])}
                            for j in idx],
        }
        n_seeds = evidence["seeds_in_group"]
        findings.append(make_finding(
            CHECK, suspects=[samples[j].key for j in idx], evidence=evidence,
            message=(f"a picture shared by {n_seeds} "
                     + (f"seed images ({n_leads} of them only chained by blended colour codes, below blended_patch's "
                        "floor)" if (n_leads := evidence["of_them_blended_leads"]) else "images other checks flagged")
                     + f" is found, by template search over every image, in {len(idx) - n_seeds} more "
                     f"({len(idx)} in all)"),
        ))
    return findings
