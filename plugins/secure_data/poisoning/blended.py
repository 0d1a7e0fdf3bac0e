"""Blended patches: one picture laid into many images at varying positions, opaque or see-through.

``trigger_patch`` and ``repeated_patch`` match the grey image's block codes. A picture *blended*
into its carriers (BadDet's blended trigger: scikit-image's logo at alpha 0.5) escapes them: in grey
that logo is a light disc whose glyph is nearly iso-luminant, half its contrast is below the codes'
threshold, and its blocks are not identical from one carrier to the next because the background
shows through. Its structure is in colour (green against orange: Lab a*). This check codes the a*
channel and keeps only matches whose *geometry* agrees across images:

1. Per image (in the feature pass, :func:`chroma_codes`): the JPEG-tolerant ternary block codes of
   :func:`secure_data.poisoning.features.block_codes`, computed on Lab a* (the green-red axis),
   smoothed (``blend_blur``: the background's noise is not the picture) and amplified
   (``blend_chroma_gain``: a blend halves the picture's contrast), at analysis resolution.
2. Index (a hash join, no all-pairs over images): occurrences of one code in different documents
   (duplicate groups) are candidate matches; a code with more than ``blend_max_bucket`` occurrences
   in the whole set is generic colour structure and is not matched. Blocks touching a labelled box
   are left out: there a recurring picture is first of all the object's own look.
3. Geometry: the matches between two images vote for their translation. A translation with at least
   ``blend_min_matches`` distinct codes in one compact region (``trigger_max_extent``), not along a
   line, links the two regions. Two crops of one photograph at slightly different scales, or a
   repetitive texture, agree at several translations: a pair whose second translation has
   ``blend_second_link`` of the first's matches is not linked. A code counts only if it links at
   least ``blend_popular_docs`` documents (one picture pasted into many images links them all
   through the same codes; a shared scene's codes link just its two views).
4. Linked regions form patterns (union-find; overlapping regions of one image are one node). A
   pattern in at least ``patch_min_images`` unrelated documents (and at most
   ``patch_max_image_fraction`` of them) whose carriers are linked to ``blend_min_partners`` others on
   average (chance agreements form chains) and that is not a labelled object's own look is reported; every
   image in it is named with its partner images, the region and the number of consistent matches.
   A pattern that passes everything but the partner floor is not reported; its members are *leads*
   for ``trigger_search`` (search.py), which names them only if a template scan of every image finds
   the picture there and in a group where flagged images are more than chance allows (a blended logo
   in 5 % of 400 generated scenes chained 7 and 6 carriers at 1.71 and 1.67 partners each).

Finds the blended logo where its colour survives the background (photographs; plain backgrounds);
on the generated scenes' strong colour noise it links fewer carriers (see docs/poisoning.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.patches import _elongation, _fixed_place_in_boxes, _inside_one_class
from secure_data.poisoning.samples import BoxTuple, Sample
from secure_data.poisoning.triggers import _inside_any_box, _label_profile, _object_like

if TYPE_CHECKING:
    from secure_data.poisoning.features import SampleFeatures

CHECK = "blended_patch"
_MAX_ELONGATION = 2.0  # matched blocks along a line (a stroke of one colour and angle) are not a picture
_SPAN = 1 << 20  # packs (code, x, y) into one int64 key


@dataclass(frozen=True)
class ChromaCodes:
    """Block codes of the a* channel: codes int64[n], block centres (analysis pixels), in/near a box."""

    codes: Any
    xs: Any
    ys: Any
    in_box: Any

    def __len__(self) -> int:
        return 0 if self.codes is None else len(self.codes)


def chroma_codes(img, boxes: Sequence[BoxTuple], config: PoisoningConfig, size: tuple[int, int]) -> ChromaCodes:
    """A pure function of (decoded BGR image, boxes, config); ``size`` = (width, height) at analysis resolution."""
    import cv2
    import numpy as np

    from secure_data.poisoning.features import block_codes

    w, h = size
    if img.ndim != 3:
        empty = np.empty(0, np.int64)
        return ChromaCodes(empty, empty.astype(np.float32), empty.astype(np.float32), empty.astype(bool))
    if (img.shape[1], img.shape[0]) != (w, h):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    a = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)[..., 1].astype(np.float32) - 128.0
    if config.blend_blur > 0:
        a = cv2.GaussianBlur(a, (0, 0), config.blend_blur)
    codes, xs, ys = block_codes(a * config.blend_chroma_gain, block_px=config.block_px,
                                min_contrast=config.block_min_contrast)
    half = config.block_px / 2
    cx, cy = xs.astype(np.float32) + half, ys.astype(np.float32) + half
    # a block whose centre is within a block of a box sees the object's outline
    in_box = np.zeros(len(cx), bool)
    for _, bx, by, bw, bh in boxes:
        in_box |= (np.abs(cx - bx * w) <= bw * w / 2 + config.block_px) \
            & (np.abs(cy - by * h) <= bh * h / 2 + config.block_px)
    return ChromaCodes(codes, cx, cy, in_box)


# ---------------------------------------------------------------- the index and the geometry

def _candidate_pairs(keys, doc_of, max_bucket: int):
    """(i, j) occurrences of one code in different documents (a hash join; big buckets skipped)."""
    import numpy as np

    n = len(keys)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, n])
    out_a, out_b = [], []
    for size in np.unique(sizes[(sizes >= 2) & (sizes <= max_bucket)]).tolist():
        first = starts[sizes == size]  # every bucket of this size at once: (buckets, pairs of members)
        a, b = np.triu_indices(size, 1)
        ia, ib = order[first[:, None] + a[None, :]].ravel(), order[first[:, None] + b[None, :]].ravel()
        keep = doc_of[ia] != doc_of[ib]
        out_a.append(ia[keep])
        out_b.append(ib[keep])
    if not out_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


def _median(x) -> float:
    """np.median of a small float64 array, without its per-call overhead (same value: the middle one,
    or the mean of the two middle ones)."""
    import numpy as np

    s = np.sort(x)
    n = len(s)
    return float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)


def _compact_link(mm, ia, ib, xs, ys, codes, extent: int, need: int) -> dict | None:
    """The matches of one translation, if they form one compact picture (not a shared scene, not a line)."""
    import numpy as np

    ax, ay = xs[ia[mm]], ys[ia[mm]]
    mx, my = _median(ax), _median(ay)
    near = (np.abs(ax - mx) <= extent) & (np.abs(ay - my) <= extent)
    if near.sum() < need or near.sum() < 0.6 * len(mm):
        return None  # spread over the frame: the same scene seen twice, not a patch
    # distinct codes: along a stroke every block at one offset to it has the same code; a picture's differ
    shared = np.unique(codes[ia[mm][near]])
    if len(shared) < need or _elongation(ax[near], ay[near]) > _MAX_ELONGATION:
        return None
    bxs, bys = xs[ib[mm][near]], ys[ib[mm][near]]
    return {"matches": int(len(shared)), "codes": shared,
            "region_a": (float(ax[near].min()), float(ay[near].min()), float(ax[near].max()), float(ay[near].max())),
            "region_b": (float(bxs.min()), float(bys.min()), float(bxs.max()), float(bys.max()))}


def _voted_translations(pair_id, bx, by, need: int):
    """Translation bins with at least ``need`` votes, each bin pooled with its 8 neighbours.

    Returns (pair, u, v) of those bins, ordered by pair, then by votes (most first), then by (u, v):
    the order in which one pair's translations are tried. Counted in one pass with numpy (keys
    packed into int64), not per pair."""
    import numpy as np

    u0, v0 = int(bx.min()) - 1, int(by.min()) - 1
    wu, wv = int(bx.max()) - u0 + 2, int(by.max()) - v0 + 2
    if (int(pair_id.max()) + 1) * wu * wv >= 1 << 62:
        raise ValueError("blended_patch: too many images or translations to pack into one key")
    cells, counts = np.unique((pair_id * wu + (bx - u0)) * wv + (by - v0), return_counts=True)
    shifts = [du * wv + dv for du in (-1, 0, 1) for dv in (-1, 0, 1)]
    pooled_keys, inverse = np.unique(np.concatenate([cells + s for s in shifts]), return_inverse=True)
    pooled = np.bincount(inverse, weights=np.tile(counts, len(shifts))).astype(np.int64)
    keep = pooled >= need
    keys, votes = pooled_keys[keep], pooled[keep]
    pair, rest = np.divmod(keys, wu * wv)
    u, v = np.divmod(rest, wv)
    u, v = u + u0, v + v0
    rank = np.lexsort((v, u, -votes, pair))
    return pair[rank], u[rank], v[rank]


def matched_regions(feats: Sequence[SampleFeatures], docs: Sequence[int], config: PoisoningConfig,
                    only: set[int] | None = None) -> list[dict]:
    """Links between regions of two images that hold one rigid picture at some translation.

    ``only``: sample indices; when given, only pairs with at least one image among them are linked."""
    import numpy as np

    codes, img, xs, ys = [], [], [], []
    for i, f in enumerate(feats):
        cc = f.chroma if f.ok else None
        if cc is None or not len(cc):
            continue
        keep = ~cc.in_box
        codes.append(cc.codes[keep])
        img.append(np.full(int(keep.sum()), i, np.int64))
        xs.append(cc.xs[keep])
        ys.append(cc.ys[keep])
    if not codes:
        return []
    code = np.concatenate(codes)
    img_of = np.concatenate(img)
    xs, ys = np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)
    doc_of = np.asarray(docs, np.int64)[img_of]
    ia, ib = _candidate_pairs(code, doc_of, config.blend_max_bucket)
    if only is not None and len(ia):
        chosen = np.isin(img_of, np.fromiter(only, np.int64, len(only)))
        keep = chosen[ia] | chosen[ib]
        ia, ib = ia[keep], ib[keep]
    if not len(ia):
        return []
    swap = img_of[ia] > img_of[ib]  # every match from the lower image index to the higher
    ia, ib = np.where(swap, ib, ia), np.where(swap, ia, ib)
    dx, dy = xs[ib] - xs[ia], ys[ib] - ys[ia]
    q = config.blend_translation_px
    bx, by = np.round(dx / q).astype(np.int64), np.round(dy / q).astype(np.int64)
    a_img, b_img = img_of[ia], img_of[ib]
    pair_id = a_img * len(feats) + b_img
    need, extent = config.blend_min_matches, config.trigger_max_extent
    cand_pair, cand_u, cand_v = _voted_translations(pair_id, bx, by, need)
    if not len(cand_pair):
        return []
    order = np.argsort(pair_id, kind="stable")
    pid = pair_id[order]
    groups = np.flatnonzero(np.r_[True, cand_pair[1:] != cand_pair[:-1]])
    firsts = np.searchsorted(pid, cand_pair[groups], side="left").tolist()
    lasts = np.searchsorted(pid, cand_pair[groups], side="right").tolist()
    by_pair: list[list[dict]] = []
    for k, (g, g_end) in enumerate(zip(groups.tolist(), np.r_[groups[1:], len(cand_pair)].tolist(), strict=True)):
        m = order[firsts[k]:lasts[k]]
        mdx, mdy = dx[m], dy[m]
        used = np.zeros(len(m), bool)
        pair_links = []
        for u, v in zip(cand_u[g:g_end].tolist(), cand_v[g:g_end].tolist(), strict=True):
            near = (~used) & (np.abs(mdx - u * q) <= 1.5 * q) & (np.abs(mdy - v * q) <= 1.5 * q)
            if near.sum() < need:
                continue
            used |= near
            mm = m[near]
            link = _compact_link(mm, ia, ib, xs, ys, code, extent, need)
            if link is not None:
                link.update(a=int(a_img[mm[0]]), b=int(b_img[mm[0]]), dx=round(_median(dx[mm]), 2),
                            dy=round(_median(dy[mm]), 2))
                pair_links.append(link)
        if pair_links:
            by_pair.append(pair_links)
    # One picture pasted into two scenes links them at one translation; two crops of one photograph at
    # slightly different scales, or a repetitive texture, agree at several.
    links = []
    for pair_links in by_pair:
        pair_links.sort(key=lambda t: -t["matches"])
        if len(pair_links) == 1 or pair_links[1]["matches"] < config.blend_second_link * pair_links[0]["matches"]:
            links.append(pair_links[0])
    # A picture pasted into many images links them all through the same codes.
    code_docs: dict[int, set[int]] = {}
    for link in links:
        for c in link["codes"].tolist():
            code_docs.setdefault(c, set()).update((int(docs[link["a"]]), int(docs[link["b"]])))
    popular = {c for c, d in code_docs.items() if len(d) >= config.blend_popular_docs}
    kept = []
    for link in links:
        common = sum(c in popular for c in link["codes"].tolist())
        if common >= need:
            kept.append({**link, "matches": common, "codes": None})
    return kept


# ---------------------------------------------------------------- patterns

def _nodes(links: Sequence[dict], extent: int) -> tuple[list[tuple[int, tuple]], list[tuple[int, int]]]:
    """Regions per image (overlapping regions of one image merged) and the edges between them."""
    per_image: dict[int, list[list]] = {}
    ends = []
    for link in links:
        for side in ("a", "b"):
            i, r = link[side], link[f"region_{side}"]
            regions = per_image.setdefault(i, [])
            cx, cy = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2
            for k, g in enumerate(regions):
                gx, gy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
                if abs(gx - cx) <= extent and abs(gy - cy) <= extent:
                    regions[k] = [min(g[0], r[0]), min(g[1], r[1]), max(g[2], r[2]), max(g[3], r[3])]
                    ends.append((i, k))
                    break
            else:
                regions.append(list(r))
                ends.append((i, len(regions) - 1))
    nodes = [(i, tuple(r)) for i in sorted(per_image) for r in per_image[i]]
    index = {}
    for i in sorted(per_image):
        for k in range(len(per_image[i])):
            index[(i, k)] = len(index)
    edges = [(index[ends[2 * t]], index[ends[2 * t + 1]]) for t in range(len(links))]
    return nodes, edges


def _components(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    from secure_data.poisoning.duplicates import _UnionFind

    uf = _UnionFind(n)
    for a, b in edges:
        uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for x in range(n):
        groups.setdefault(uf.find(x), []).append(x)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def _inliers_outside(view_a, views_b, region, scale: float, margin: float) -> int:
    """ORB matches of b (as it is, or mirrored) onto a that agree on one similarity (RANSAC) and lie
    outside ``region`` of a (analysis pixels, widened by ``margin``); ``view`` = (keypoints, descriptors)."""
    import cv2
    import numpy as np

    ka, da = view_a
    if da is None or len(ka) < 4:
        return 0
    x1, y1 = (region[0] - margin) * scale, (region[1] - margin) * scale
    x2, y2 = (region[2] + margin) * scale, (region[3] + margin) * scale
    best = 0
    for kb, db in views_b:
        if db is None or len(kb) < 4:
            continue
        matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(db, da)
        if len(matches) < 4:
            continue
        src = np.float32([kb[m.queryIdx].pt for m in matches])
        dst = np.float32([ka[m.trainIdx].pt for m in matches])
        matrix, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0)
        if matrix is None or inl is None:
            continue
        pts = dst[inl.ravel() > 0]
        best = max(best, int(((pts[:, 0] < x1) | (pts[:, 0] > x2) | (pts[:, 1] < y1) | (pts[:, 1] > y2)).sum()))
    return best


class SceneViews:
    """Two images' ORB views (as they are, b also mirrored) compared outside a region of a: a scene test.

    ``load_gray(i)``: sample ``i``'s verification grey (or None); keypoints are computed once per image."""

    def __init__(self, feats: Sequence[SampleFeatures], config: PoisoningConfig,
                 load_gray: Callable[[int], Any]) -> None:
        self.feats, self.config, self.load_gray = feats, config, load_gray
        self.views: dict[int, tuple] = {}

    def _view(self, i: int) -> tuple:
        import numpy as np

        from secure_data.poisoning.duplicates import _keypoints

        if i not in self.views:
            g = self.load_gray(i)
            self.views[i] = (None, ((), None), ((), None)) if g is None else \
                (g.shape[1], _keypoints(g), _keypoints(np.ascontiguousarray(g[:, ::-1])))
        return self.views[i]

    def same_scene(self, a: int, region_a: Sequence[float], b: int) -> bool:
        """At least ``blend_scene_inliers`` ORB matches of b onto a agree on one similarity outside
        ``region_a`` (analysis pixels of a, widened by a block): the two share more than a picture."""
        (wa, plain_a, _), (_, plain_b, mirror_b) = self._view(a), self._view(b)
        if wa is None or plain_b[1] is None:
            return False
        scale = wa / self.feats[a].analysis_size[0]  # analysis pixels -> verification-grey pixels
        return _inliers_outside(plain_a, (plain_b, mirror_b), region_a, scale,
                                self.config.block_px) >= self.config.blend_scene_inliers


def scene_documents(feats: Sequence[SampleFeatures], docs: Sequence[int], config: PoisoningConfig,
                    load_gray: Callable[[int], Any]) -> list[int]:
    """``docs`` with two views of one scene made one document, for ``blended_patch``.

    Crops or frames of one scene hold the same colour structure at one scale, and with many views of
    a few scenes their links form patterns like a pasted picture's (400 crops of ten photographs: 37
    clean images named). For every pair :func:`matched_regions` links, the two verification greys
    (``load_gray``) are matched with ORB under one similarity (b as it is or mirrored): at least
    ``blend_scene_inliers`` agreeing keypoints *outside* the linked region mean the two images share
    more than a picture, i.e. a scene (measured: links between crops of one photograph 4-110 outside,
    median 12; between two carriers of ART's blended triggers 2-15). Such pairs' documents are merged
    (union-find), so the check never links two views of one scene and counts a scene once.
    ``blend_scene_inliers`` 0: ``docs`` unchanged.
    """
    docs = [int(d) for d in docs]
    if config.blend_scene_inliers <= 0 or config.blend_min_matches <= 0 or not docs:
        return docs
    links = matched_regions(feats, docs, config)
    views = SceneViews(feats, config, load_gray)
    parent = list(range(max(docs) + 1))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for link in links:
        a, b = link["a"], link["b"]
        if find(docs[a]) == find(docs[b]):
            continue
        if views.same_scene(a, link["region_a"], b):
            parent[find(docs[a])] = find(docs[b])
    return [find(d) for d in docs]


def _member_coherence(idx, regions, feats, maps, config: PoisoningConfig) -> float | None:
    """Median structure-tensor coherence of the members' windows on their search maps (None: no maps)."""
    from secure_data.poisoning.search import median_coherence, window_box

    if maps is None or config.blend_max_coherence >= 1:
        return None
    windows = []
    for i, r in zip(idx, regions, strict=True):
        m = maps.get(i)
        if m is None:
            continue
        w, h = feats[i].analysis_size
        x, y, tw, th = window_box((r[0] * w, r[1] * h, r[2] * w, r[3] * h), m.shape[1] / w, config.block_px / 2)
        windows.append(m[y:y + th, x:x + tw].astype("float32"))
    return median_coherence(windows)


def check_blended_patches(
    samples: Sequence[Sample],
    feats: Sequence[SampleFeatures],
    docs: Sequence[int],
    config: PoisoningConfig,
    class_names: Mapping[int, str] | None = None,
    seed_keys: set[str] | frozenset[str] = frozenset(),
    maps: Any = None,
    leads: set[str] | None = None,
) -> list[Finding]:
    """``maps``: the stage's search maps (``maps.get(i)``: int8 Lab map of sample ``i``, see search.py); with
    them a pattern whose members' windows are one-dimensional (strokes, line ends at one angle) is dropped.

    ``leads``: if given, the members of every pattern that passes all tests but the partner floor
    (``blend_min_partners``) are added to it. Such a chain is not reported: it is where the trigger search
    looks, and that search names images only where its own template, z and seed-enrichment tests agree."""
    import numpy as np

    names = class_names or {}
    n_docs = len(set(docs))
    if n_docs < config.patch_min_images or config.blend_min_matches <= 0:
        return []
    links = matched_regions(feats, docs, config)
    if not links:
        return []
    nodes, edges = _nodes(links, config.trigger_max_extent)
    partners: dict[int, list[dict]] = {}
    for link, (na, nb) in zip(links, edges, strict=True):
        partners.setdefault(na, []).append({"sample": samples[nodes[nb][0]].key, "matches": link["matches"]})
        partners.setdefault(nb, []).append({"sample": samples[nodes[na][0]].key, "matches": link["matches"]})
    findings: list[Finding] = []
    for comp in _components(len(nodes), edges):
        comp_set = set(comp)
        members: dict[int, dict] = {}
        for node in comp:
            i, r = nodes[node]
            w, h = feats[i].analysis_size
            region = [round(r[0] / w, 4), round(r[1] / h, 4), round(r[2] / w, 4), round(r[3] / h, 4)]
            best = sorted(partners.get(node, []), key=lambda p: (-p["matches"], p["sample"]))
            m = members.get(i)
            if m is None or len(best) > len(m["partners"]):
                members[i] = {"sample": samples[i].key, "region": region, "partners": best[:5],
                              "partner_count": len(best), "matches": max((p["matches"] for p in best), default=0)}
        member_docs = {docs[i] for i in members}
        if len(member_docs) < config.patch_min_images or len(member_docs) > config.patch_max_image_fraction * n_docs:
            continue
        degree = float(np.mean([m["partner_count"] for m in members.values()]))
        idx = sorted(members)
        regions = [members[i]["region"] for i in idx]
        boxes = [samples[i].boxes for i in idx]
        if sum(_object_like(r, b) for r, b in zip(regions, boxes, strict=True)) >= 0.5 * len(idx) \
                or _fixed_place_in_boxes(regions, boxes):
            continue
        coherent = _member_coherence(idx, regions, feats, maps, config)
        if coherent is not None and coherent > config.blend_max_coherence:
            continue  # lines drawn at one angle end alike in colour codes too: a stroke, not a picture
        inside = [k for k, i in enumerate(idx) if _inside_any_box(regions[k], boxes[k])]
        in_class = _inside_one_class([regions[k] for k in inside], [boxes[k] for k in inside]) \
            if len(inside) >= 0.5 * len(idx) else None
        seeded = sum(samples[idx[k]].key in seed_keys for k in inside)
        if in_class is not None and seeded < 0.5 * len(inside):
            continue
        if degree < config.blend_min_partners:
            # chance agreements form chains; one pasted picture links each carrier to several others. At a
            # few percent of a few hundred images a blended logo's carriers can chain just as thinly: a lead
            if leads is not None:
                leads.update(samples[i].key for i in idx)
            continue
        centres = np.array([[(r[0] + r[2]) / 2, (r[1] + r[3]) / 2] for r in regions])
        rest = [s for j, s in enumerate(samples) if j not in members and feats[j].ok]
        evidence = {
            "members": len(idx),
            "member_documents": len(member_docs),
            "documents": n_docs,
            "links": sum(1 for a, _ in edges if a in comp_set),
            "mean_partners": round(degree, 4),
            "position_spread": round(float(np.max(np.std(centres, axis=0))), 4),
            "median_coherence": round(coherent, 4) if coherent is not None else None,
            "inside_a_box_fraction": round(len(inside) / len(idx), 4),
            "inside_one_class": names.get(in_class, in_class) if in_class is not None else None,
            "label_anomalous_members": sum(samples[i].key in seed_keys for i in idx),
            "labels_with_patch": _label_profile([samples[i] for i in idx], names),
            "labels_without_patch": _label_profile(rest, names),
            "occurrences": [members[i] for i in idx],
        }
        findings.append(make_finding(
            CHECK, suspects=[samples[i].key for i in idx], evidence=evidence,
            message=(f"one picture (its colour blocks, rigidly arranged) recurs in {len(idx)} images "
                     f"({len(member_docs)} unrelated) at varying positions, opaque or blended"),
        ))
    return findings
