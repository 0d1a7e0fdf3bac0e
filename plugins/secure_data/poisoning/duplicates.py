"""Exact and near-duplicates, the labels they carry, and the splits they sit in.

* Exact duplicates: equal SHA-256 of the image bytes.
* Near-duplicates: 64-bit pHash within ``near_dup_radius`` bits (also against the
  mirror of every image), found with multi-index hashing: no pair loop. Every
  candidate is then verified geometrically (ORB + RANSAC similarity), which also
  gives the transform that carries one copy's boxes onto the other.
* Leakage proposals beyond the pHash radius: every val/test image's nearest
  ``leak_neighbours`` earlier-split images by the cosine of their low-frequency DCT
  vectors (what pHash thresholds; a crop, shift or colour shift moves the values
  little but flips the bits near the median). Verified the same way, and the
  verified transform must make the two frames cover each other (``leak_min_overlap``).

Duplicates are joined into groups (union-find). Inside a group the labels of every
linked pair are compared box by box (IoU matching, mirrored if the pair is a
mirror image). A box counts in that comparison only where the other picture shows
the same thing under it (``box_agreement``: after carrying one image onto the other,
the box region's best normalised correlation within a few pixels): two overlapping
crops of one photograph with different objects drawn on them share the background,
not the boxes, and are not a copy with changed labels. Three findings come out of it:

* ``duplicate_label_conflict``: the same picture with different labels, the
  signature of a label-flip attack. The side whose boxes also fail the content
  checks (class confusion, misalignment, outliers) is blamed; when the evidence
  cannot tell them apart, every member of the conflict is blamed.
* ``split_leakage``: a group that spans train/val/test. The copies outside the
  earliest split are blamed (removing them from evaluation keeps training intact).
* ``duplicate``: plain redundant copies within one split (all but one are named).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.features import SampleFeatures
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.hamming_index import near_pairs
from secure_data.poisoning.samples import BoxTuple, Sample, split_rank


@dataclass(frozen=True)
class DupEdge:
    a: int  # sample indices, a < b
    b: int
    kind: str  # "exact" (same bytes) | "near" (pHash)
    distance: int  # Hamming bits (0 for exact)
    mirrored: bool  # b is a mirror image of a
    inliers: int | None = None  # geometric verification: ORB matches consistent with one similarity
    transform: tuple[float, ...] | None = None  # 2x3 affine, b's normalised coords -> a's (mirror included)
    correlation: float | None = None  # thumbnail verification (where ORB found too little texture)
    proposal: str = "phash"  # what proposed the pair: "phash" (within the radius) | "layout" (nearest neighbour)
    similarity: float | None = None  # cosine of the layout vectors (layout proposals)
    overlap: float | None = None  # share of each frame the other covers after verification (layout proposals)
    # per box of a, then per box of b: does the other picture show the same thing there (box_agreement; None
    # where it cannot tell: a box outside the other frame, too small, flat). None: not measured.
    agreement: tuple[tuple[float | None, ...], tuple[float | None, ...]] | None = None


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def find_duplicate_edges(
    samples: Sequence[Sample], feats: Sequence[SampleFeatures], config: PoisoningConfig
) -> list[DupEdge]:
    """Linked pairs, O(n) except the pHash search, which is multi-index hashing (sub-quadratic).

    Identical values are linked as a star to their first member, so a thousand copies
    of one image cost a thousand edges, not half a million.
    """
    import numpy as np

    edges: list[DupEdge] = []
    usable = [i for i, f in enumerate(feats) if f.ok]
    # 1. identical bytes
    first_by_sha: dict[str, int] = {}
    reps: list[int] = []
    for i in usable:
        sha = samples[i].image.sha256
        if sha in first_by_sha:
            edges.append(DupEdge(first_by_sha[sha], i, "exact", 0, False))
        else:
            first_by_sha[sha] = i
            reps.append(i)
    # 2. identical pHash among the distinct files
    first_by_hash: dict[int, int] = {}
    value_reps: list[int] = []
    for i in reps:
        h = feats[i].phash
        if h in first_by_hash:
            edges.append(DupEdge(first_by_hash[h], i, "near", 0, False))
        else:
            first_by_hash[h] = i
            value_reps.append(i)
    # 3. near pHash (and mirrored) among distinct values
    n = len(value_reps)
    if n >= 1:
        plain = np.array([feats[i].phash for i in value_reps], dtype=np.uint64)
        values = plain
        if config.match_mirrored:
            values = np.concatenate([plain, np.array([feats[i].phash_mirror for i in value_reps], dtype=np.uint64)])
        pi, pj, pd = near_pairs(values, config.near_dup_radius)
        best: dict[tuple[int, int], tuple[int, bool]] = {}
        for x, y, d in zip(pi.tolist(), pj.tolist(), pd.tolist(), strict=True):
            mx, my = x >= n, y >= n
            if mx and my:
                continue  # mirror vs mirror is the same as plain vs plain
            u, v = x % n, y % n
            if u == v:
                continue  # an image and its own mirror (a symmetric picture)
            key = (min(u, v), max(u, v))
            cand = (d, mx != my)
            if key not in best or cand < best[key]:
                best[key] = cand
        for (u, v), (d, mirrored) in sorted(best.items()):
            a, b = sorted((value_reps[u], value_reps[v]))
            edges.append(DupEdge(a, b, "near", d, mirrored))
    edges.extend(_layout_proposals(samples, feats, usable, edges, config))
    return edges


_NN_CELLS = 1 << 24  # similarities per matrix product (64 MB of float32; query rows = this / references)
# Above this many query x reference pairs the search goes through an inverted file (k-means lists,
# ``_IVF_PROBES`` nearest lists per query) instead of comparing every pair: sub-quadratic.
_EXACT_MAX_PAIRS = 1 << 30
_IVF_PROBES = 8


def _top_k(sims, mirror, k: int):
    """Per row: the k largest values (columns, values, mirror flags), -1 / -inf where a row has fewer."""
    import numpy as np

    n, m = sims.shape
    cols = np.full((n, k), -1, np.int64)
    vals = np.full((n, k), -np.inf, np.float32)
    mirs = np.zeros((n, k), bool)
    r = np.arange(n)
    for j in range(min(k, m)):  # k rounds of argmax: far cheaper than a partition for k << m
        col = sims.argmax(axis=1)
        cols[:, j], vals[:, j] = col, sims[r, col]
        if mirror is not None:
            mirs[:, j] = mirror[r, col]
        sims[r, col] = -np.inf
    return cols, vals, mirs


def _exact_block(q, qm, refs, k: int):
    import numpy as np

    sims = q @ refs.T
    mirror = None
    if qm is not None:
        sims_m = qm @ refs.T
        mirror = sims_m > sims
        np.maximum(sims, sims_m, out=sims)
    return _top_k(sims, mirror, k)


def nearest_layouts(q, qm, refs, k: int, seed: int = 0):
    """The k most similar rows of ``refs`` (unit vectors) for every row of ``q`` (and of its mirror ``qm``,
    whichever is closer): (indices, cosines, mirrored), each (len(q), k); index -1 where there is none.

    Exact (chunked matrix products) up to ``_EXACT_MAX_PAIRS`` query x reference pairs; beyond, an
    inverted file: spherical k-means on a sample of the references (about sqrt(n) lists), every query
    compared with the references of its ``_IVF_PROBES`` nearest lists only. A copy sits close to its
    original (cosine 0.67+), so both fall in the same or neighbouring lists.
    """
    import numpy as np

    n_q, n_r = len(q), len(refs)
    if n_q * n_r <= _EXACT_MAX_PAIRS:
        rows = max(1, _NN_CELLS // max(1, n_r))
        parts = [_exact_block(q[s:s + rows], None if qm is None else qm[s:s + rows], refs, k)
                 for s in range(0, n_q, rows)]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))
    rng = np.random.default_rng(seed)
    n_lists = int(min(4096, max(16, np.sqrt(n_r))))
    train = refs[rng.choice(n_r, size=min(n_r, 40 * n_lists), replace=False)]
    cent = train[rng.choice(len(train), size=n_lists, replace=False)].copy()
    for _ in range(8):
        assign = _assign(train, cent)
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, train)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        cent = np.where(norms > 1e-6, sums / np.maximum(norms, 1e-6), cent).astype(np.float32)
    ref_list = _assign(refs, cent)
    order = np.argsort(ref_list, kind="stable")
    bounds = np.searchsorted(ref_list[order], np.arange(n_lists + 1))
    probes = min(_IVF_PROBES, n_lists)
    best_i = np.full((n_q, k), -1, np.int64)
    best_s = np.full((n_q, k), -np.inf, np.float32)
    best_m = np.zeros((n_q, k), bool)
    variants = [(q, False)] + ([(qm, True)] if qm is not None else [])
    for vecs, mirrored in variants:
        near = np.concatenate([_top_k(vecs[s:s + 4096] @ cent.T, None, probes)[0]
                               for s in range(0, n_q, 4096)]).ravel()  # probes list ids per query
        by_list = np.argsort(near, kind="stable")
        q_bounds = np.searchsorted(near[by_list], np.arange(n_lists + 1))
        for lst in range(n_lists):
            rows = by_list[q_bounds[lst]:q_bounds[lst + 1]] // probes
            members = order[bounds[lst]:bounds[lst + 1]]
            if not len(rows) or not len(members):
                continue
            cols, vals, _ = _exact_block(vecs[rows], None, refs[members], k)
            cand_i = np.concatenate([best_i[rows], np.where(cols >= 0, members[np.maximum(cols, 0)], -1)], axis=1)
            cand_s = np.concatenate([best_s[rows], vals], axis=1)
            cand_m = np.concatenate([best_m[rows], np.full(cols.shape, mirrored)], axis=1)
            # the same reference may come twice (plain and mirror): keep its better entry only
            pick = np.argsort(-cand_s, axis=1, kind="stable")
            cand_i, cand_s, cand_m = (np.take_along_axis(x, pick, 1) for x in (cand_i, cand_s, cand_m))
            dup = np.zeros_like(cand_i, bool)
            for j in range(1, cand_i.shape[1]):
                dup[:, j] = ((cand_i[:, :j] == cand_i[:, j:j + 1]) & (cand_i[:, j:j + 1] >= 0)).any(axis=1)
            cand_s = np.where(dup, -np.inf, cand_s)
            pick = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
            best_i[rows] = np.take_along_axis(np.where(dup, -1, cand_i), pick, 1)
            best_s[rows] = np.take_along_axis(cand_s, pick, 1)
            best_m[rows] = np.take_along_axis(cand_m, pick, 1)
    return best_i, best_s, best_m


def _assign(vecs, cent):
    import numpy as np

    rows = max(1, _NN_CELLS // max(1, len(cent)))
    return np.concatenate([(vecs[s:s + rows] @ cent.T).argmax(axis=1) for s in range(0, len(vecs), rows)])


def _layout_proposals(
    samples: Sequence[Sample], feats: Sequence[SampleFeatures], usable: Sequence[int],
    known: Sequence[DupEdge], config: PoisoningConfig,
) -> list[DupEdge]:
    """Each later-split image's ``leak_neighbours`` nearest earlier-split images by layout cosine.

    One matrix product per chunk of queries (n_eval x n_earlier x 63 multiply-adds): cheap to a few
    hundred thousand images, and the work grows with the product of the split sizes (docs/poisoning.md).
    Pairs pHash already proposed are skipped; the rest are only proposals until verified.
    """
    import numpy as np

    k = config.leak_neighbours
    have = [i for i in usable if feats[i].layout is not None]
    if k <= 0 or not have:
        return []
    ranks = {i: split_rank(samples[i].split or "") for i in have}
    known_pairs = {(e.a, e.b) for e in known}
    out: dict[tuple[int, int], DupEdge] = {}
    for rank in sorted(set(ranks.values()))[1:]:
        queries = [i for i in have if ranks[i] == rank]
        refs = [i for i in have if ranks[i] < rank]
        q = np.stack([feats[i].layout for i in queries])
        qm = np.stack([feats[i].layout_mirror for i in queries]) if config.match_mirrored else None
        ref_idx, sims, mirrors = nearest_layouts(q, qm, np.stack([feats[i].layout for i in refs]), k, config.seed)
        for row, q_idx in enumerate(queries):
            for col, sim, mirrored in zip(ref_idx[row].tolist(), sims[row].tolist(), mirrors[row].tolist(),
                                          strict=True):
                if col < 0 or sim < config.leak_min_similarity:
                    continue
                a, b = sorted((refs[col], q_idx))
                if (a, b) in known_pairs or (a, b) in out:
                    continue
                d = hamming_distance(feats[a].phash, feats[b].phash_mirror if mirrored else feats[b].phash)
                out[(a, b)] = DupEdge(a, b, "near", d, bool(mirrored), proposal="layout", similarity=round(sim, 4))
    return [out[key] for key in sorted(out)]


def hamming_distance(x: int, y: int) -> int:
    return (x ^ y).bit_count()


def frame_overlap(transform: Sequence[float]) -> float:
    """How much two frames share under a b -> a normalised transform: the smaller of the share of a that
    b's frame covers and the share of b's frame that lies inside a (1.0: same picture area)."""
    _, cx, cy, w, h = map_boxes([(0, 0.5, 0.5, 1.0, 1.0)], transform)[0]
    iw = max(0.0, min(1.0, cx + w / 2) - max(0.0, cx - w / 2))
    ih = max(0.0, min(1.0, cy + h / 2) - max(0.0, cy - h / 2))
    inter = iw * ih
    return min(inter, inter / (w * h)) if w * h > 0 else 0.0


def duplicate_groups(n: int, edges: Sequence[DupEdge]) -> list[int]:
    """Group id (smallest member index) per sample."""
    uf = _UnionFind(n)
    for e in edges:
        uf.union(e.a, e.b)
    return [uf.find(i) for i in range(n)]


# ---------------------------------------------------------------- geometric verification

_ORB_SIDE = 400  # verification resolution (long side); ORB needs texture, not megapixels


_ORB_MIN_SIDE = 32  # ORB's pyramid and 15 px border need at least this much image


def _keypoints(gray):
    """ORB keypoints, or none for an image too small (or too odd) for ORB: such a pair is simply unconfirmed.

    A 1x1 or 4x300 image is valid input (integrity accepts it); OpenCV's pyramid resize asserts on it.
    """
    import cv2

    if gray is None or min(gray.shape[:2]) < _ORB_MIN_SIDE:
        return (), None
    orb = cv2.ORB_create(nfeatures=500, fastThreshold=10, edgeThreshold=15, patchSize=15)
    try:
        return orb.detectAndCompute(gray, None)
    except cv2.error:
        return (), None


def verify_pair(gray_a, gray_b, *, mirrored: bool, min_inliers: int) -> tuple[int, tuple[float, ...] | None]:
    """ORB matches + RANSAC similarity between two images: (inliers, b->a normalised affine or None).

    pHash only says two pictures have the same coarse layout; synthetic and real scenes
    with one big object in the same place collide at 4-8 bits. A copy shares its
    texture point for point, so many matches agree on one transform; unrelated
    images give a handful. The transform also carries the boxes of one copy into
    the frame of the other, so crops and mirrors are compared box for box.
    """
    import cv2
    import numpy as np

    hb, wb = gray_b.shape[:2]
    ha, wa = gray_a.shape[:2]
    if mirrored:
        gray_b = np.ascontiguousarray(gray_b[:, ::-1])
    ka, da = _keypoints(gray_a)
    kb, db = _keypoints(gray_b)
    if da is None or db is None or len(ka) < 4 or len(kb) < 4:
        return 0, None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(db, da)
    if len(matches) < max(4, min_inliers):
        return 0, None
    src = np.float32([kb[m.queryIdx].pt for m in matches])
    dst = np.float32([ka[m.trainIdx].pt for m in matches])
    matrix, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0)
    if matrix is None or inl is None:
        return 0, None
    inliers = int(inl.sum())
    # normalised b -> (mirror) -> b pixels -> a pixels -> normalised a
    to_px = np.array([[wb, 0, 0], [0, hb, 0], [0, 0, 1]], float)
    if mirrored:
        to_px = np.array([[-wb, 0, wb], [0, hb, 0], [0, 0, 1]], float)
    full = np.vstack([matrix, [0, 0, 1]])
    to_norm = np.array([[1 / wa, 0, 0], [0, 1 / ha, 0], [0, 0, 1]], float)
    norm = (to_norm @ full @ to_px)[:2]
    return inliers, tuple(round(float(v), 5) for v in norm.ravel())


_THUMB = 64  # side of the thumbnails the texture-free verification correlates
# Fewer ORB corners than this (of 500 asked for) in either image: too little texture for ORB to decide.
# Generated scenes and photographs give 300-500; a sky, a wall or a flat graphic far fewer.
_LOW_TEXTURE_CORNERS = 100


def _thumb(gray, mirrored: bool = False):
    import cv2
    import numpy as np

    t = cv2.resize(gray, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.ascontiguousarray(t[:, ::-1]) if mirrored else t


def shift_transform(mirrored: bool, tx: float = 0.0, ty: float = 0.0) -> tuple[float, ...]:
    """The b -> a normalised affine of a shift by (tx, ty) of the plain or mirrored b."""
    return (-1.0, 0.0, 1.0 + tx, 0.0, 1.0, ty) if mirrored else (1.0, 0.0, tx, 0.0, 1.0, ty)


def thumbnail_match(gray_a, gray_b, *, mirrored: bool) -> tuple[float, tuple[float, ...] | None]:
    """Zero-mean normalised correlation of 64x64 thumbnails after the best translation (phase
    correlation), and the b -> a normalised transform it implies.

    ORB needs corners; a sky, a wall, a flat generated background has few, so two copies of a
    low-texture picture may share too few keypoints to confirm. Their thumbnails still agree pixel for
    pixel after a small shift (re-encoding, brightness and contrast changes do not move the zero-mean
    correlation), while different pictures with the same coarse layout (what pHash pairs) do not.
    """
    import cv2
    import numpy as np

    ta, tb = _thumb(gray_a), _thumb(gray_b, mirrored)
    win = cv2.createHanningWindow((_THUMB, _THUMB), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(tb, ta, win)
    if max(abs(dx), abs(dy)) > _THUMB / 8:
        return 0.0, None  # more than an eighth of the picture away: not a small shift or crop
    moved = cv2.warpAffine(tb, np.float32([[1, 0, dx], [0, 1, dy]]), (_THUMB, _THUMB), borderMode=cv2.BORDER_REFLECT)
    m = int(np.ceil(max(abs(dx), abs(dy)))) + 1  # compare where both thumbnails have pixels
    a, b = ta[m:-m, m:-m].ravel(), moved[m:-m, m:-m].ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    score = float((a * b).sum() / denom) if denom > 1e-6 else 0.0
    return score, tuple(round(float(v), 5) for v in shift_transform(mirrored, dx / _THUMB, dy / _THUMB))


def transform_match(gray_a, gray_b, transform: Sequence[float]) -> float:
    """Zero-mean normalised correlation of 64x64 thumbnails after carrying b onto a by ``transform``
    (a b -> a normalised affine, mirror included), over the part of a that b's frame covers.

    :func:`thumbnail_match` only searches shifts; a crop resized back to full frame is a *scaled* copy.
    Here the thumbnail judges ORB's own transform: pixel for pixel, a copy agrees under it, while two
    pictures that share a few keypoints do not. 0.0 when b covers less than half of a's thumbnail.
    """
    import cv2
    import numpy as np

    ta, tb = _thumb(gray_a), _thumb(gray_b)
    t = np.float32(transform).reshape(2, 3)
    m = np.float32([[t[0, 0], t[0, 1], t[0, 2] * _THUMB], [t[1, 0], t[1, 1], t[1, 2] * _THUMB]])
    moved = cv2.warpAffine(tb, m, (_THUMB, _THUMB), flags=cv2.INTER_LINEAR, borderValue=0)
    cover = cv2.warpAffine(np.ones_like(tb), m, (_THUMB, _THUMB), flags=cv2.INTER_NEAREST, borderValue=0)
    cover = cv2.erode(cover, np.ones((3, 3), np.uint8)) > 0.5  # not the interpolated rim
    if cover.mean() < 0.5:
        return 0.0
    a, b = ta[cover], moved[cover]
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 1e-6 else 0.0


# Half the ORB inliers plus the thumbnail: the thumbnail must clear the non-copy ceiling with a margin
# (generated look-alikes, one drawn object at the same place on a flat background, reach 0.971-0.972 with
# 20-22 agreeing inliers; colour-shifted copies 0.985+)
_PARTIAL_MARGIN = 0.01


def _same_transform(t1: Sequence[float], t2: Sequence[float], tol: float = 1 / 32) -> bool:
    """Two b -> a normalised affines that move every point of the frame by nearly the same amount."""
    corners = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))
    for x, y in corners:
        x1, y1 = t1[0] * x + t1[1] * y + t1[2], t1[3] * x + t1[4] * y + t1[5]
        x2, y2 = t2[0] * x + t2[1] * y + t2[2], t2[3] * x + t2[4] * y + t2[5]
        if abs(x1 - x2) > tol or abs(y1 - y2) > tol:
            return False
    return True


def verification_gray(gray):
    """A grey image at the resolution pairs are verified at (long side <= ``_ORB_SIDE``; never upscaled)."""
    import cv2

    h, w = gray.shape[:2]
    scale = min(1.0, _ORB_SIDE / max(h, w))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return gray


def _verification_grays(load_gray: Callable[[int], Any]) -> Callable[[int], Any]:
    """``load_gray`` at verification resolution, each image read once (an image may be in many pairs)."""
    cache: dict[int, Any] = {}

    def gray(i: int):
        if i not in cache:
            g = load_gray(i)
            cache[i] = None if g is None else verification_gray(g)
        return cache[i]

    return gray


def verify_edges(edges: Sequence[DupEdge], load_gray: Callable[[int], Any], config: PoisoningConfig) -> list[DupEdge]:
    """Keep exact edges; keep a pHash edge if the two images verify geometrically (ORB + RANSAC) or,
    where ORB finds too little texture or only half the inliers, if their thumbnails also correlate after
    a small shift. A pair at
    pHash distance 0 is never dropped (its verification is recorded, whatever it found)."""

    gray = _verification_grays(load_gray)
    n_corners: dict[int, int] = {}

    def corners(i: int, g) -> int:
        if i not in n_corners:
            n_corners[i] = len(_keypoints(g)[0])
        return n_corners[i]

    kept = []
    for e in sorted(edges, key=lambda e: (e.a, e.b)):
        if e.kind == "exact":
            kept.append(e)
            continue
        ga, gb = gray(e.a), gray(e.b)
        if ga is None or gb is None:
            continue
        inliers, transform = verify_pair(ga, gb, mirrored=e.mirrored, min_inliers=config.dup_min_inliers)
        if inliers >= config.dup_min_inliers:
            if e.proposal == "layout":
                # a nearest neighbour is only a copy if the verified transform maps frame onto frame: two
                # overlapping views of one scene share keypoints too
                overlap = frame_overlap(transform) if transform is not None else 0.0
                if overlap >= config.leak_min_overlap:
                    kept.append(replace(e, inliers=inliers, transform=transform, overlap=round(overlap, 3)))
                continue
            kept.append(DupEdge(e.a, e.b, e.kind, e.distance, e.mirrored, inliers, transform))
            continue
        # ORB had corners to judge by and found no common transform: a different picture. Only where one
        # side has too few corners (low texture), or ORB found part of the evidence (at least half the
        # inliers: a colour shift changes the grey levels ORB's binary tests compare), is the thumbnail
        # correlation asked as well; then it must confirm on its own threshold.
        low_texture = min(corners(e.a, ga), corners(e.b, gb)) < _LOW_TEXTURE_CORNERS
        partial = inliers >= config.dup_min_inliers // 2 and transform is not None
        ask = low_texture or partial or e.distance == 0
        score, shift = thumbnail_match(ga, gb, mirrored=e.mirrored) if ask else (0.0, None)
        # half the ORB evidence counts only where ORB's transform and the thumbnail shift agree (two judges,
        # one transform); flat generated backgrounds let unrelated thumbnails correlate up to 0.97
        agreed = partial and shift is not None and _same_transform(transform, shift) \
            and score >= config.dup_min_correlation + _PARTIAL_MARGIN
        confirmed = (low_texture or agreed) and score >= config.dup_min_correlation
        if partial and not confirmed:
            # A crop resized back to full frame is a scaled copy, which a shift cannot align: ask the
            # thumbnail under ORB's own transform instead (still two judges, one transform), and for a
            # layout proposal the frames must cover each other as for a full ORB confirmation.
            warped = transform_match(ga, gb, transform)
            overlap = frame_overlap(transform)
            if warped >= config.dup_min_correlation + _PARTIAL_MARGIN and \
                    (e.proposal != "layout" or overlap >= config.leak_min_overlap):
                kept.append(replace(e, inliers=inliers, transform=transform, correlation=round(warped, 4),
                                    overlap=round(overlap, 3) if e.proposal == "layout" else None))
                continue
        if confirmed or e.distance == 0:
            overlap = round(frame_overlap(shift), 3) if confirmed and e.proposal == "layout" else None
            kept.append(replace(e, inliers=inliers, transform=shift if confirmed else None,
                                correlation=round(score, 4), overlap=overlap))
    return kept


# ---------------------------------------------------------------- what the two pictures share under each box

_AGREEMENT_RADIUS = 4  # px at verification resolution: a mirror's half pixel, ORB's scale error on a 5 % crop
_AGREEMENT_MIN_COVER = 0.9  # share of a box the other frame must cover to be judged at all


def box_agreement(
    gray_a, gray_b, boxes_a: Sequence[BoxTuple], boxes_b: Sequence[BoxTuple], *,
    transform: Sequence[float] | None, mirrored: bool,
) -> tuple[tuple[float | None, ...], tuple[float | None, ...]]:
    """For each box of a, then of b (carried onto a): does the other picture show the same thing there?

    b is warped onto a's frame by the verified transform (b -> a, normalised; the plain or mirrored
    frame where there is none); each box's region of a is then correlated (zero-mean, normalised) with
    the warped b within ``_AGREEMENT_RADIUS`` pixels, and the best value is kept. A copy agrees under
    every box whatever its labels say (measured 0.75-1.0 for resized, cropped, re-encoded, mirrored and
    colour-shifted copies); two views of one background with different objects drawn on them do not
    (0.56 and lower). None where it cannot be told: the box is under 4 px, less than 90 % inside the
    other frame, or flat.
    """
    import math

    import cv2
    import numpy as np

    if gray_a is None or gray_b is None:
        return (None,) * len(boxes_a), (None,) * len(boxes_b)
    ga, gb = verification_gray(gray_a), verification_gray(gray_b)
    ha, wa = ga.shape[:2]
    hb, wb = gb.shape[:2]
    t = tuple(transform) if transform is not None else shift_transform(mirrored)
    m = np.float32([[t[0] * wa / wb, t[1] * wa / hb, t[2] * wa], [t[3] * ha / wb, t[4] * ha / hb, t[5] * ha]])
    moved = cv2.warpAffine(gb.astype(np.float32), m, (wa, ha), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    cover = cv2.warpAffine(np.ones((hb, wb), np.uint8), m, (wa, ha), flags=cv2.INTER_NEAREST, borderValue=0)
    a32 = ga.astype(np.float32)
    r = _AGREEMENT_RADIUS

    def one(box: BoxTuple) -> float | None:
        _, cx, cy, w, h = box
        x0, x1 = max(0, math.floor((cx - w / 2) * wa)), min(wa, math.ceil((cx + w / 2) * wa))
        y0, y1 = max(0, math.floor((cy - h / 2) * ha)), min(ha, math.ceil((cy + h / 2) * ha))
        if x1 - x0 < 4 or y1 - y0 < 4 or cover[y0:y1, x0:x1].mean() < _AGREEMENT_MIN_COVER:
            return None
        template = a32[y0:y1, x0:x1]
        if float(template.std()) < 1.0:
            return None
        window = moved[max(0, y0 - r):min(ha, y1 + r), max(0, x0 - r):min(wa, x1 + r)]
        scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)  # a flat window gives no number
        best = float(np.nan_to_num(scores, nan=-1.0, posinf=-1.0, neginf=-1.0).max())
        return round(min(1.0, max(-1.0, best)), 3)

    return tuple(one(b) for b in boxes_a), tuple(one(b) for b in map_boxes(boxes_b, t))


def with_box_agreement(edges: Sequence[DupEdge], samples: Sequence[Sample],
                       load_gray: Callable[[int], Any], config: PoisoningConfig) -> list[DupEdge]:
    """``edges`` with :func:`box_agreement` measured for every verified near pair that has boxes.

    Exact copies (same bytes) agree by definition and are left unmeasured; so is everything when
    ``dup_box_min_agreement`` is 0 (every box then counts, as before the measurement existed).
    """
    if config.dup_box_min_agreement <= 0:
        return list(edges)
    gray = _verification_grays(load_gray)
    out = []
    for e in edges:
        sa, sb = samples[e.a], samples[e.b]
        if e.kind == "exact" or not (sa.boxes or sb.boxes):
            out.append(e)
            continue
        agreement = box_agreement(gray(e.a), gray(e.b), sa.boxes, sb.boxes,
                                  transform=e.transform, mirrored=e.mirrored)
        out.append(replace(e, agreement=agreement))
    return out


# ---------------------------------------------------------------- label comparison

def _iou(a: BoxTuple, b: BoxTuple) -> float:
    _, ax, ay, aw, ah = a
    _, bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw / 2, bx + bw / 2) - max(ax - aw / 2, bx - bw / 2))
    iy = max(0.0, min(ay + ah / 2, by + bh / 2) - max(ay - ah / 2, by - bh / 2))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def map_boxes(boxes: Sequence[BoxTuple], transform: Sequence[float]) -> list[BoxTuple]:
    """Carry normalised boxes through a 2x3 affine (the axis-aligned hull of the moved corners)."""
    a, b, c, d, e, f = transform
    out = []
    for cls, cx, cy, w, h in boxes:
        xs, ys = [], []
        for x in (cx - w / 2, cx + w / 2):
            for y in (cy - h / 2, cy + h / 2):
                xs.append(a * x + b * y + c)
                ys.append(d * x + e * y + f)
        out.append((cls, (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)))
    return out


def compare_labels(
    boxes_a: Sequence[BoxTuple], boxes_b: Sequence[BoxTuple], *, mirrored: bool, iou: float,
    transform: Sequence[float] | None = None,
    agreement: tuple[Sequence[float | None], Sequence[float | None]] | None = None, min_agreement: float = 0.0,
) -> dict:
    """Greedy IoU matching of two label sets; counts of agreeing, re-classed and unmatched boxes.

    ``transform`` (b -> a, from verification) wins over ``mirrored`` when given. With ``agreement``
    (:func:`box_agreement`), a box whose region the other picture does not show (agreement below
    ``min_agreement``) is left out of the matching: it is counted in ``unseen_in_second`` (a box of a)
    or ``unseen_in_first`` (a box of b), never as a changed or missing label.
    """
    if transform is not None:
        boxes_b = map_boxes(boxes_b, transform)
    elif mirrored:
        boxes_b = [(c, 1.0 - cx, cy, w, h) for c, cx, cy, w, h in boxes_b]
    unseen_a: set[int] = set()
    unseen_b: set[int] = set()
    if agreement is not None and min_agreement > 0:
        unseen_a = {i for i, v in enumerate(agreement[0]) if v is not None and v < min_agreement}
        unseen_b = {j for j, v in enumerate(agreement[1]) if v is not None and v < min_agreement}
    pairs = sorted(
        ((_iou(a, b), i, j) for i, a in enumerate(boxes_a) for j, b in enumerate(boxes_b)
         if i not in unseen_a and j not in unseen_b), reverse=True
    )
    used_a: set[int] = set(unseen_a)
    used_b: set[int] = set(unseen_b)
    same = changed = 0
    class_changes = []
    for score, i, j in pairs:
        if score < iou:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        if boxes_a[i][0] == boxes_b[j][0]:
            same += 1
        else:
            changed += 1
            class_changes.append([boxes_a[i][0], boxes_b[j][0]])
    return {
        "same": same,
        "class_changed": changed,
        "class_changes": sorted(class_changes),
        "only_in_first": len(boxes_a) - len(used_a),
        "only_in_second": len(boxes_b) - len(used_b),
        "unseen_in_second": len(unseen_a),
        "unseen_in_first": len(unseen_b),
    }


def labels_conflict(cmp: Mapping) -> bool:
    return bool(cmp["class_changed"] or cmp["only_in_first"] or cmp["only_in_second"])


# ---------------------------------------------------------------- findings

def _later(samples: Sequence[Sample], e: DupEdge) -> int:
    ra, rb = split_rank(samples[e.a].split or ""), split_rank(samples[e.b].split or "")
    return e.a if ra > rb else e.b


def _compare(sa: Sample, sb: Sample, e: DupEdge, config: PoisoningConfig) -> dict:
    return compare_labels(sa.boxes, sb.boxes, mirrored=e.mirrored, iou=config.box_match_iou, transform=e.transform,
                          agreement=e.agreement, min_agreement=config.dup_box_min_agreement)


def _shared_background_only(sa: Sample, sb: Sample, e: DupEdge, cmp: Mapping) -> bool:
    """Two views of one background with different objects on it, not a copy.

    A layout proposal (beyond the pHash radius) whose labelled boxes have nothing in common; or any
    verified near pair (pHash 0 aside: never dropped) where every box, of either image, covers
    something the other picture does not show.
    """
    if not sa.boxes and not sb.boxes:
        return False
    if e.proposal == "layout" and sa.boxes and sb.boxes and cmp["same"] == 0 and cmp["class_changed"] == 0:
        return True
    unseen = cmp["unseen_in_first"] + cmp["unseen_in_second"]
    return e.kind == "near" and e.distance > 0 and unseen == len(sa.boxes) + len(sb.boxes)

def check_duplicates(
    samples: Sequence[Sample],
    feats: Sequence[SampleFeatures],
    edges: Sequence[DupEdge],
    groups: Sequence[int],
    content_flags: Mapping[str, int],
    config: PoisoningConfig,
) -> list[Finding]:
    """Findings for every duplicate group: label conflicts, split leakage, plain redundancy.

    A pair only the layout nearest-neighbour search proposed (beyond the pHash radius) that verified
    geometrically but whose labelled boxes have nothing in common is two views of one background with
    different objects on it (what overlapping crops of one photograph look like), not a copy: dropped;
    so is any verified near pair (pHash 0 aside) whose every box covers something the other picture does
    not show (``DupEdge.agreement``), and a layout pair whose later-split image already has a verified
    pHash pair.
    """
    # an image with a verified pHash pair is judged on it: a second, layout-only neighbour adds nothing to
    # its findings and only risks naming a look-alike (one object at the same place on a flat background)
    hashed = {i for e in edges if e.proposal != "layout" for i in (e.a, e.b)}
    compared = [(e, _compare(samples[e.a], samples[e.b], e, config)) for e in edges]
    kept = [(e, cmp) for e, cmp in compared if not _shared_background_only(samples[e.a], samples[e.b], e, cmp)
            and not (e.proposal == "layout" and _later(samples, e) in hashed)]
    if len(kept) != len(edges):
        groups = duplicate_groups(len(samples), [e for e, _ in kept])
    by_group: dict[int, list[tuple[DupEdge, dict]]] = {}
    for e, cmp in kept:
        by_group.setdefault(groups[e.a], []).append((e, cmp))
    findings: list[Finding] = []
    for root in sorted(by_group):
        group_edges = by_group[root]
        members = sorted({e.a for e, _ in group_edges} | {e.b for e, _ in group_edges})
        keys = [samples[i].key for i in members]
        edge_docs = []
        conflict_suspects: set[str] = set()
        conflict_edges = []
        for e, cmp in group_edges:
            sa, sb = samples[e.a], samples[e.b]
            doc = {
                "first": sa.key, "second": sb.key, "kind": e.kind, "hamming": e.distance,
                "mirrored": e.mirrored, "verified_inliers": e.inliers, "labels": cmp,
                **({"verified_correlation": e.correlation} if e.correlation is not None else {}),
                **({"box_agreement": {"first": list(e.agreement[0]), "second": list(e.agreement[1])}}
                   if e.agreement is not None else {}),
                **({"proposed_by": "layout nearest neighbour", "layout_cosine": e.similarity,
                    "frame_overlap": e.overlap} if e.proposal == "layout" else {}),
            }
            edge_docs.append(doc)
            if labels_conflict(cmp):
                conflict_edges.append(doc)
                fa, fb = content_flags.get(sa.key, 0), content_flags.get(sb.key, 0)
                if fa and not fb:
                    conflict_suspects.add(sa.key)
                elif fb and not fa:
                    conflict_suspects.add(sb.key)
                else:
                    conflict_suspects.update((sa.key, sb.key))
        splits = sorted({samples[i].split or "" for i in members}, key=lambda s: (split_rank(s), s))
        evidence_base = {
            "group": keys,
            "splits": splits,
            "pairs": sorted(edge_docs, key=lambda d: (d["first"], d["second"])),
        }
        if conflict_edges:
            findings.append(make_finding(
                "duplicate_label_conflict",
                suspects=conflict_suspects,
                involved=keys,
                evidence={
                    **evidence_base,
                    "conflicting_pairs": len(conflict_edges),
                    "content_flags": {k: content_flags.get(k, 0) for k in keys},
                },
                message=(
                    f"{len(keys)} copies of one image carry different labels "
                    f"({len(conflict_edges)} conflicting pair(s)); blamed: {', '.join(sorted(conflict_suspects))}"
                ),
            ))
        leaked: set[str] = set()
        if len(splits) > 1:
            first = splits[0]
            leaked = {samples[i].key for i in members if (samples[i].split or "") != first}
            findings.append(make_finding(
                "split_leakage",
                suspects=leaked,
                involved=keys,
                evidence=evidence_base,
                message=f"near-duplicates span splits {splits}: {len(leaked)} copies outside {first!r}",
            ))
        redundant = [samples[i].key for i in members[1:]]
        redundant = [k for k in redundant if k not in conflict_suspects and k not in leaked]
        if redundant and len(conflict_edges) < len(group_edges):
            findings.append(make_finding(
                "duplicate",
                suspects=redundant,
                involved=keys,
                evidence=evidence_base,
                message=f"{len(keys)} copies of one image; {len(redundant)} redundant",
            ))
    return findings
