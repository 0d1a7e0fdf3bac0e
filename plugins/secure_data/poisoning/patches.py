"""Repeated small patches: one picture pasted into many unrelated images, wherever it sits, whatever the labels.

The ``trigger_patch`` check starts from label-anomalous images; an attack that leaves no label
anomaly another check can see (a trigger stamped into some images and the boxes of one class
removed while others stay, or a clean-label backdoor) gives it no seeds. This check needs no
labels. A pasted patch is the same pixels at the same scale in every carrier, so its blocks
keep their spatial arrangement; natural content recurs in pieces, not as a rigid constellation.

1. Per image (from the block codes the feature pass already computed): *constellations*, i.e.
   pairs of high-contrast 8x8 blocks at fixed offsets (2 px right, 2 px down, diagonal),
   each pair one 64-bit key (offset, code, code). A patch of ``block_px + 2`` pixels or more
   yields the same keys in every image it is pasted into, at any position.
2. Merge (a hash join, linear): in how many documents (duplicate groups, so copies count once)
   each key occurs. Keys in at least ``patch_min_images`` documents and at most
   ``patch_max_image_fraction`` of them are candidates (more is the domain's common structure).
3. Per image, the candidate keys inside one compact region (``trigger_max_extent``); an image
   with at least ``patch_min_codes`` distinct ones links them (union-find): one pattern.
4. A pattern's carriers are the images holding at least ``patch_min_codes`` of its keys (and a
   quarter of the median carrier's count) in one compact region; it is reported when they are at
   least ``patch_min_images`` unrelated documents and the region is not the labelled object itself
   (a pattern covering its box is a class's appearance, e.g. printed logos, not a patch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.features import SampleFeatures
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.samples import Sample
from secure_data.poisoning.triggers import _compact_hits, _inside_any_box, _label_profile, _object_like

OFFSETS = ((2, 0), (0, 2), (2, 2))
_CODE_SPACE = 3 ** 16  # ternary block codes are < 3**16
# A code in more than this share of documents is too generic to anchor a constellation (flat edges).
_MAX_CODE_FRACTION = 0.5
# A key whose places inside its boxes (relative to the box) vary less than this is a part of the object.
_PART_SPREAD = 0.12
# Hits along a line (a stroke or edge of one angle and width recurs in many pictures) are not a patch.
_MAX_ELONGATION = 3.0


def _unique(values):
    """Sorted distinct values (a sort and a diff: faster than np.unique's hash path on big int64 arrays)."""
    import numpy as np

    a = np.sort(values)
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def _member(values, sorted_set):
    """Boolean mask: which ``values`` are in ``sorted_set`` (binary search)."""
    import numpy as np

    if not len(sorted_set) or not len(values):
        return np.zeros(len(values), bool)
    idx = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[idx] == values


def constellations(f: SampleFeatures, keep_codes) -> tuple:
    """(keys, xs, ys): one key per pair of kept high-contrast blocks at each of :data:`OFFSETS`."""
    import numpy as np

    empty = (np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int32))
    if not f.ok or f.codes is None or not len(f.codes):
        return empty
    mask = _member(f.codes, keep_codes)
    codes, xs, ys = f.codes[mask], f.xs[mask], f.ys[mask]
    if not len(codes):
        return empty
    w, h = int(xs.max()) + 3, int(ys.max()) + 3
    grid = np.full((h, w), -1, np.int64)
    grid[ys, xs] = codes
    keys, kx, ky = [], [], []
    for k, (dx, dy) in enumerate(OFFSETS):
        other = grid[ys + dy, xs + dx]
        ok = other >= 0
        keys.append((k * _CODE_SPACE + codes[ok]) * _CODE_SPACE + other[ok])
        kx.append(xs[ok])
        ky.append(ys[ok])
    return np.concatenate(keys), np.concatenate(kx), np.concatenate(ky)


def _doc_frequency(values_per_image, docs, n_docs: int):
    """(sorted distinct values, number of documents each occurs in)."""
    import numpy as np

    doc_ids = sorted(set(docs))
    index = {d: k for k, d in enumerate(doc_ids)}
    parts = [_unique(v) * n_docs + index[d] for v, d in zip(values_per_image, docs, strict=True) if len(v)]
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    values = _unique(np.concatenate(parts)) // n_docs  # one per (value, document), sorted by value
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return values[starts], np.diff(np.r_[starts, len(values)])


def _part_keys(samples, feats, per_image, cand):
    """Candidate keys that are part of a labelled object's look: mostly inside boxes, at one place in the
    box (an eye, a stretch of outline). A pasted patch sits anywhere in the boxes it is pasted into."""
    import numpy as np

    ks, inside, us, vs = [], [], [], []
    for s, f, (k, xs, ys) in zip(samples, feats, per_image, strict=True):
        m = _member(k, cand)
        if not m.any():
            continue
        w, h = f.analysis_size
        px, py = (xs[m] + 5.0) / max(w, 1), (ys[m] + 5.0) / max(h, 1)
        u, v = np.full(len(px), np.nan), np.full(len(px), np.nan)
        for _, bx, by, bw, bh in s.boxes:
            bu, bv = (px - (bx - bw / 2)) / bw, (py - (by - bh / 2)) / bh
            hit = (bu >= 0) & (bu <= 1) & (bv >= 0) & (bv <= 1) & np.isnan(u)
            u[hit], v[hit] = bu[hit], bv[hit]
        ks.append(k[m])
        inside.append(~np.isnan(u))
        us.append(np.nan_to_num(u))
        vs.append(np.nan_to_num(v))
    if not ks:
        return np.empty(0, np.int64)
    k, inside, u, v = (np.concatenate(a) for a in (ks, inside, us, vs))
    order = np.argsort(k, kind="stable")
    k, inside, u, v = k[order], inside[order], u[order], v[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    n = np.diff(np.r_[starts, len(k)])
    n_in = np.add.reduceat(inside.astype(np.int64), starts)
    safe = np.maximum(n_in, 1)

    def spread(x):
        mean = np.add.reduceat(x, starts) / safe
        return np.sqrt(np.maximum(np.add.reduceat(x * x, starts) / safe - mean ** 2, 0.0))

    part = (n_in >= 0.5 * n) & (spread(u) <= _PART_SPREAD) & (spread(v) <= _PART_SPREAD)
    return k[starts][part]


def _same_carrier_groups(per_image, docs, cand, config: PoisoningConfig) -> list[set[int]]:
    """Keys grouped by the documents they occur in: a pasted patch gives many keys with (nearly) the same
    carriers; natural structure recurs piecemeal, each key in its own set of images.

    Two MinHash values of each key's document set (sub-quadratic: a sort); sets that agree up to a
    few chance occurrences elsewhere still share both minima with probability ~Jaccard^2. Largest
    groups first.
    """
    import numpy as np

    doc_ids = sorted(set(docs))
    index = {d: k for k, d in enumerate(doc_ids)}
    rng = np.random.default_rng(config.seed)
    h1, h2 = (rng.permutation(len(doc_ids)).astype(np.int64) for _ in range(2))
    ks, ds = [], []
    for (k, _, _), d in zip(per_image, docs, strict=True):
        u = _unique(k[_member(k, cand)])
        ks.append(u)
        ds.append(np.full(len(u), index[d], np.int64))
    if not ks:
        return []
    k, d = np.concatenate(ks), np.concatenate(ds)
    order = np.argsort(k, kind="stable")
    k, d = k[order], d[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    m1 = np.minimum.reduceat(h1[d], starts)
    m2 = np.minimum.reduceat(h2[d], starts)
    groups: dict[tuple[int, int], set[int]] = {}
    for key, a, b in zip(k[starts].tolist(), m1.tolist(), m2.tolist(), strict=True):
        groups.setdefault((a, b), set()).add(key)
    out = [g for g in groups.values() if len(g) >= config.patch_min_codes]
    return sorted(out, key=lambda g: (-len(g), min(g)))


def _fixed_place_in_boxes(regions, boxes_per_image, inside_share: float = 0.8) -> bool:
    """Most carriers hold the pattern inside a box, at the same place relative to the box: an object
    part (eyes, glyphs). ART-style triggers land at random places in the boxes they poison."""
    import numpy as np

    rel = []
    for (x1, y1, x2, y2), boxes in zip(regions, boxes_per_image, strict=True):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        for _, bx, by, bw, bh in boxes:
            if abs(cx - bx) <= bw / 2 and abs(cy - by) <= bh / 2:
                rel.append(((cx - bx) / bw, (cy - by) / bh))
                break
    if len(rel) < inside_share * len(regions):
        return False
    spread = np.std(np.array(rel), axis=0)
    return bool(spread[0] <= _PART_SPREAD and spread[1] <= _PART_SPREAD)


def _inside_one_class(regions, boxes_per_image, share: float = 0.8) -> int | None:
    """The class whose boxes hold the pattern's centre in at least ``share`` of the carriers, if any."""
    counts: dict[int, int] = {}
    for (x1, y1, x2, y2), boxes in zip(regions, boxes_per_image, strict=True):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        for c in {c for c, bx, by, bw, bh in boxes if abs(cx - bx) <= bw / 2 and abs(cy - by) <= bh / 2}:
            counts[c] = counts.get(c, 0) + 1
    best = max(sorted(counts), key=lambda c: counts[c], default=None)
    return best if best is not None and counts[best] >= share * len(regions) else None


def _elongation(xs, ys) -> float:
    """Ratio of the long to the short axis of the hit positions (a square patch ~1, a line >> 1)."""
    import numpy as np

    if len(xs) < 3:
        return 1.0
    ev = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float)))
    return float(np.sqrt(max(ev[-1], 1e-9) / max(ev[0], 0.25)))


def _hits_of(image_keys, arr):
    k, xs, ys = image_keys
    m = _member(k, arr)
    hx, hy, _ = _compact_hits(xs[m], ys[m], k[m], 24)
    return hx, hy


def _spans_its_box(xs, ys, boxes, size: tuple[int, int], block: int, span: float = 0.6) -> bool:
    """The hits lie in a labelled box and spread over most of it (>= ``span`` of its width and height):
    the recurring thing is the object's outline, not a patch placed on or in it."""
    import numpy as np

    w, h = size
    px, py = (xs + block / 2) / w, (ys + block / 2) / h
    mx, my = float(np.median(px)), float(np.median(py))
    for _, bx, by, bw, bh in boxes:
        if abs(mx - bx) > bw / 2 or abs(my - by) > bh / 2:
            continue
        inside = (np.abs(px - bx) <= bw / 2) & (np.abs(py - by) <= bh / 2)
        ext_x = (float(xs[inside].max() - xs[inside].min()) + block) / (bw * w)
        ext_y = (float(ys[inside].max() - ys[inside].min()) + block) / (bh * h)
        if ext_x >= span and ext_y >= span:
            return True
    return False


class _KeyIndex:
    """Every image's constellation keys in one sorted array: which images hold at least ``need``
    occurrences of a set of keys, found with two binary searches per key instead of a pass per image."""

    def __init__(self, keys_per_image) -> None:
        import numpy as np

        self.n = len(keys_per_image)
        if not self.n:
            self.keys, self.image = np.empty(0, np.int64), np.empty(0, np.int64)
            return
        keys = np.concatenate([np.asarray(k, np.int64) for k in keys_per_image])
        image = np.repeat(np.arange(self.n), [len(k) for k in keys_per_image])
        order = np.argsort(keys, kind="stable")
        self.keys, self.image = keys[order], image[order]

    def at_least(self, sorted_keys, need: int):
        """Indices (ascending) of the images with ``need`` or more occurrences of ``sorted_keys``."""
        import numpy as np

        lo = np.searchsorted(self.keys, sorted_keys, side="left")
        lengths = np.searchsorted(self.keys, sorted_keys, side="right") - lo
        total = int(lengths.sum())
        if not total:
            return np.empty(0, np.int64)
        starts = np.cumsum(lengths) - lengths
        pos = np.arange(total) - np.repeat(starts, lengths) + np.repeat(lo, lengths)
        counts = np.bincount(self.image[pos], minlength=self.n)
        return np.flatnonzero(counts >= max(need, 1))


def check_repeated_patches(
    samples: Sequence[Sample],
    feats: Sequence[SampleFeatures],
    docs: Sequence[int],
    config: PoisoningConfig,
    class_names: Mapping[int, str] | None = None,
    seed_keys: set[str] | frozenset[str] = frozenset(),
) -> list[Finding]:
    """``seed_keys``: samples other checks found label-anomalous (as for ``trigger_patch``). A pattern that
    sits inside boxes of one class (in most carriers that have it inside a box) is reported only when
    most of those carriers are among them: inside
    its boxes, a recurring picture is far more often that class's look (printed glyphs) than a trigger."""
    import numpy as np

    names = class_names or {}
    n_docs = len(set(docs))
    if n_docs < config.patch_min_images:
        return []
    empty = np.empty(0, np.int64)
    codes, code_df = _doc_frequency([f.codes if f.ok and f.codes is not None else empty for f in feats], docs, n_docs)
    keep = codes[(code_df >= config.patch_min_images) & (code_df <= _MAX_CODE_FRACTION * n_docs)]
    per_image = [constellations(f, keep) for f in feats]
    keys, key_df = _doc_frequency([k for k, _, _ in per_image], docs, n_docs)
    cand = keys[(key_df >= config.patch_min_images) & (key_df <= config.patch_max_image_fraction * n_docs)]
    if not len(cand):
        return []
    cand = cand[~_member(cand, _part_keys(samples, feats, per_image, cand))]
    patterns = _same_carrier_groups(per_image, docs, cand, config)

    def region(i: int, xs, ys) -> list[float]:
        w, h = feats[i].analysis_size
        b = config.block_px + 2
        return [float(xs.min()) / w, float(ys.min()) / h, float(xs.max() + b) / w, float(ys.max() + b) / h]

    def compact(i: int, keys_of_interest, need: int):
        k, xs, ys = per_image[i]
        m = _member(k, keys_of_interest)
        if m.sum() < need:
            return None
        hx, hy, hk = _compact_hits(xs[m], ys[m], k[m], config.trigger_max_extent)
        return (hx, hy, hk) if len(_unique(hk)) >= need else None

    holders = _KeyIndex([k for k, _, _ in per_image])
    findings: list[Finding] = []
    claimed: set[int] = set()
    for pattern in patterns:
        arr = np.array(sorted(pattern), np.int64)
        members: dict[int, dict] = {}
        # A carrier holds most of the pattern (a few keys lost to re-encoding or what is under it).
        need = max(config.patch_min_codes, len(pattern) // 2)
        for i in holders.at_least(arr, need).tolist():
            got = compact(i, arr, need)
            if got is None:
                continue
            xs, ys, hk = got
            members[i] = {"sample": samples[i].key, "keys": int(len(_unique(hk))),
                          "region": [round(v, 4) for v in region(i, xs, ys)]}
        if not members:
            continue
        typical = float(np.median([m["keys"] for m in members.values()]))
        members = {i: m for i, m in members.items() if m["keys"] >= max(config.patch_min_codes, 0.25 * typical)}
        member_docs = {docs[i] for i in members}
        if len(member_docs) < config.patch_min_images or set(members) <= claimed:
            continue  # too few, or the same carriers as a pattern already reported
        idx = sorted(members)
        spans = [_spans_its_box(*_hits_of(per_image[i], arr), samples[i].boxes, feats[i].analysis_size,
                                config.block_px + 2) for i in idx]
        object_like = [_object_like(members[i]["region"], samples[i].boxes) for i in idx]
        if sum(o or sp for o, sp in zip(object_like, spans, strict=True)) >= 0.5 * len(idx) \
                or _fixed_place_in_boxes([members[i]["region"] for i in idx], [samples[i].boxes for i in idx]) \
                or np.median([_elongation(*_hits_of(per_image[i], arr)) for i in idx]) > _MAX_ELONGATION:
            continue  # the pattern is a labelled object's own appearance (or a part of it)
        inside = [i for i in idx if _inside_any_box(members[i]["region"], samples[i].boxes)]
        in_class = _inside_one_class([members[i]["region"] for i in inside], [samples[i].boxes for i in inside]) \
            if len(inside) >= 0.5 * len(idx) else None
        seeded = sum(samples[i].key in seed_keys for i in inside)
        if in_class is not None and seeded < 0.5 * len(inside):
            continue
        claimed |= set(idx)
        centres = np.array([[(members[i]["region"][0] + members[i]["region"][2]) / 2,
                             (members[i]["region"][1] + members[i]["region"][3]) / 2] for i in idx])
        rest = [s for j, s in enumerate(samples) if j not in members and feats[j].ok]
        evidence = {
            "pattern_keys": len(pattern),
            "members": len(idx),
            "member_documents": len(member_docs),
            "documents": n_docs,
            "median_keys": typical,
            "position_spread": round(float(np.max(np.std(centres, axis=0))), 4),
            "inside_a_box_fraction": round(float(np.mean(
                [_inside_any_box(members[i]["region"], samples[i].boxes) for i in idx])), 4),
            "inside_one_class": names.get(in_class, in_class) if in_class is not None else None,
            "label_anomalous_members": seeded,
            "labels_with_patch": _label_profile([samples[i] for i in idx], names),
            "labels_without_patch": _label_profile(rest, names),
            "occurrences": [members[i] for i in idx],
        }
        findings.append(make_finding(
            "repeated_patch", suspects=[samples[i].key for i in idx], evidence=evidence,
            message=(f"the same small picture ({len(pattern)} block constellations) recurs in {len(idx)} images "
                     f"({len(member_docs)} unrelated) at varying positions"),
        ))
    return findings
