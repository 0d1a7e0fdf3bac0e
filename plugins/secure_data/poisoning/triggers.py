"""Trigger patches: a small pattern stamped into many images whose labels were tampered with.

A BadNets-style backdoor needs two things in the training set: the same small
patch in many images, and labels that follow the patch instead of the content
(re-classed boxes, or boxes removed). Each alone is common in clean data (logos,
edges, hard examples); together they are the attack. The check therefore looks for
block patterns that are *over-represented in label-anomalous images*:

1. Per image (shardable): JPEG-tolerant ternary codes of every high-contrast 8x8
   block at stride 1 (:func:`secure_data.poisoning.features.block_codes`). Stride 1
   means a patch yields the same codes wherever it is pasted: no alignment needed,
   fixed and varying positions are the same problem.
2. Seeds: images the other checks found label-anomalous (class confusion,
   misaligned or outlying boxes, duplicate label conflicts) plus images without any
   box. Near-duplicates count once ("document" = duplicate group).
3. Merge (a hash join, linear): per code, in how many documents and in how many
   seed documents does it occur. A code is significant when a one-sided
   hypergeometric test says it is over-represented among seeds, Bonferroni-corrected
   over all codes tested. Generic structure (edges, corners, glyphs) is common
   everywhere and is not over-represented; a trigger is.
4. Significant codes that sit together in seed images form one pattern (union-find).
   Every image, seed or not, that holds at least ``trigger_min_hits`` distinct codes
   of a pattern inside one compact region (and at least ``trigger_hit_fraction`` of
   the median count seen in the seed carriers) carries the patch, which also finds
   the triggered images whose labels happened not to change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.features import SampleFeatures
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.samples import Sample


def _compact_hits(xs, ys, codes, max_extent: int):
    """The hits within ``max_extent`` of their median position (robust to a few strays)."""
    import numpy as np

    mx, my = np.median(xs), np.median(ys)
    near = (np.abs(xs - mx) <= max_extent) & (np.abs(ys - my) <= max_extent)
    return xs[near], ys[near], codes[near]


def significant_codes(
    feats: Sequence[SampleFeatures], docs: Sequence[int], seed_docs: set[int], config: PoisoningConfig
) -> tuple[dict[int, float], dict]:
    """Codes over-represented among seed documents -> their p-values, plus test statistics."""
    import numpy as np
    from scipy.stats import hypergeom

    doc_ids = sorted(set(docs))
    doc_index = {d: k for k, d in enumerate(doc_ids)}
    n_docs = len(doc_ids)
    seed_mask = np.zeros(n_docs, bool)
    for d in seed_docs:
        if d in doc_index:
            seed_mask[doc_index[d]] = True
    n_seed = int(seed_mask.sum())
    stats = {"documents": n_docs, "seed_documents": n_seed, "codes_tested": 0}
    if n_seed < config.trigger_min_support:
        return {}, stats
    keys = []
    for f, d in zip(feats, docs, strict=True):
        if f.ok and f.codes is not None and len(f.codes):
            keys.append(np.unique(f.codes) * n_docs + doc_index[d])
    if not keys:
        return {}, stats
    pairs = np.unique(np.concatenate(keys))  # one (code, document) pair per document
    codes, doc_of = np.divmod(pairs, n_docs)
    uniq, first, df = np.unique(codes, return_index=True, return_counts=True)
    df_seed = np.add.reduceat(seed_mask[doc_of].astype(np.int64), first)
    tested = df_seed >= config.trigger_min_support
    stats["codes_tested"] = int(tested.sum())
    if not tested.any():
        return {}, stats
    pvals = hypergeom.sf(df_seed[tested] - 1, n_docs, df[tested], n_seed)
    cut = config.trigger_alpha / max(1, int(tested.sum()))
    # Significance alone is not enough: seeds are picked by label anomalies, which correlate with
    # content (a flipped face is still a face), so face parts are mildly over-represented among them.
    # A trigger code lives (almost) only in seed images: require most of its documents to be seeds.
    purity = df_seed[tested] / df[tested]
    sig = (pvals < cut) & (purity >= config.trigger_min_purity)
    stats["bonferroni_cut"] = cut
    return dict(zip(uniq[tested][sig].tolist(), pvals[sig].tolist(), strict=True)), stats


def _patterns(
    feats: Sequence[SampleFeatures], seed_idx: set[int], sig: Mapping[int, float], config: PoisoningConfig
) -> list[set[int]]:
    """Group significant codes that appear together (compactly) in seed images."""
    import numpy as np

    parent: dict[int, int] = {c: c for c in sig}

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    sig_arr = np.fromiter(sig, dtype=np.int64)
    for i in sorted(seed_idx):
        f = feats[i]
        if not f.ok or f.codes is None or not len(f.codes):
            continue
        hit = np.isin(f.codes, sig_arr)
        if hit.sum() < config.trigger_min_hits:
            continue
        _, _, codes = _compact_hits(f.xs[hit], f.ys[hit], f.codes[hit], config.trigger_max_extent)
        codes = np.unique(codes).tolist()
        for c in codes[1:]:
            ra, rb = find(codes[0]), find(c)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, set[int]] = {}
    for c in sig:
        groups.setdefault(find(c), set()).add(c)
    return [g for _, g in sorted(groups.items()) if len(g) >= config.trigger_min_hits]


def _object_like(region, boxes, min_cover: float = 0.4) -> bool:
    """The matched region lies in a box and covers a good part of it: it is the object, not a patch.

    A stamped patch is small against the objects it sits on (a 12 px patch on a
    40 px face covers < 10 %); the recurring part of a real object spans it.
    """
    x1, y1, x2, y2 = region
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    for _, bx, by, bw, bh in boxes:
        ix = max(0.0, min(x2, bx + bw / 2) - max(x1, bx - bw / 2))
        iy = max(0.0, min(y2, by + bh / 2) - max(y1, by - bh / 2))
        inter = ix * iy
        if area > 0 and inter >= 0.5 * area and inter >= min_cover * bw * bh:
            return True
    return False


def _inside_any_box(region, boxes) -> bool:
    x1, y1, x2, y2 = region
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return any(abs(cx - bx) <= bw / 2 and abs(cy - by) <= bh / 2 for _, bx, by, bw, bh in boxes)


def check_triggers(
    samples: Sequence[Sample],
    feats: Sequence[SampleFeatures],
    docs: Sequence[int],
    seed_keys: set[str],
    config: PoisoningConfig,
    class_names: Mapping[int, str] | None = None,
) -> list[Finding]:
    import numpy as np
    from scipy.stats import hypergeom

    names = class_names or {}
    seed_idx = {i for i, s in enumerate(samples) if s.key in seed_keys}
    seed_docs = {docs[i] for i in seed_idx}
    sig, stats = significant_codes(feats, docs, seed_docs, config)
    if not sig:
        return []
    findings: list[Finding] = []
    n_docs = len(set(docs))
    for pattern in _patterns(feats, seed_idx, sig, config):
        pattern_arr = np.fromiter(pattern, dtype=np.int64)
        members: dict[int, dict] = {}
        for i, f in enumerate(feats):
            if not f.ok or f.codes is None or not len(f.codes):
                continue
            hit = np.isin(f.codes, pattern_arr)
            if hit.sum() < config.trigger_min_hits:
                continue
            xs, ys, codes = _compact_hits(f.xs[hit], f.ys[hit], f.codes[hit], config.trigger_max_extent)
            if len(np.unique(codes)) < config.trigger_min_hits:
                continue
            w, h = f.analysis_size
            b = config.block_px
            members[i] = {
                "sample": samples[i].key,
                "hits": int(len(np.unique(codes))),
                # normalised [x1, y1, x2, y2] of the matched blocks: where the patch is
                "region": [round(float(xs.min()) / w, 4), round(float(ys.min()) / h, 4),
                           round(float(xs.max() + b) / w, 4), round(float(ys.max() + b) / h, 4)],
                "seed": i in seed_idx,
            }
        # A patch in an image lights up most of its codes (stride 1: every offset inside it); a
        # clean image that shares a few codes by chance lights up a handful. Scale the bar to
        # what the label-anomalous carriers show.
        seed_hits = [m["hits"] for i, m in members.items() if i in seed_idx]
        typical = float(np.median(seed_hits)) if seed_hits else 0.0
        if typical < config.trigger_min_median_hits:
            # A stamped patch is a dense cluster of co-occurring codes (an 8 px patch already
            # gives a median of 12+); a handful of codes is a recurring object part.
            continue
        bar = max(config.trigger_min_hits, math.ceil(config.trigger_hit_fraction * typical))
        # an unflagged image matched inside one of its labelled objects needs a patch's density: a handful
        # of codes there is that object's look (faces copied mirrored and re-labelled make their own
        # codes enriched among the flagged images; other faces then share 5 or 6 of them)
        members = {i: m for i, m in members.items() if m["hits"] >= bar and (
            i in seed_idx or m["hits"] >= config.trigger_min_median_hits
            or not _inside_any_box(m["region"], samples[i].boxes))}
        member_docs = {docs[i] for i in members}
        if len(member_docs) < config.trigger_min_support:
            continue
        # A pattern that *is* a labelled object (its region covers a box) is that class's
        # appearance, not a patch: re-classed objects are class_confusion's business.
        object_like = [_object_like(members[i]["region"], samples[i].boxes) for i in members]
        if sum(object_like) >= 0.5 * len(object_like):
            continue
        seed_member_docs = member_docs & seed_docs
        p_pattern = float(hypergeom.sf(len(seed_member_docs) - 1, n_docs, len(member_docs), len(seed_docs)))
        idx = sorted(members)
        rest = [i for i in range(len(samples)) if i not in members and feats[i].ok]
        centres = np.array([[(m["region"][0] + m["region"][2]) / 2, (m["region"][1] + m["region"][3]) / 2]
                            for m in members.values()])
        spread = float(np.max(np.std(centres, axis=0)))
        evidence = {
            "pattern_codes": sorted(int(c) for c in pattern),
            "code_p_values": {str(c): sig[c] for c in sorted(pattern)},
            "members": len(idx),
            "member_documents": len(member_docs),
            "seed_member_documents": len(seed_member_docs),
            "seed_documents": len(seed_docs),
            "documents": n_docs,
            "pattern_p_value": p_pattern,
            "fixed_position": spread <= 0.02,
            "position_spread": round(spread, 4),
            "inside_a_box_fraction": round(float(np.mean(
                [_inside_any_box(members[i]["region"], samples[i].boxes) for i in idx])), 4),
            "labels_with_patch": _label_profile([samples[i] for i in idx], names),
            "labels_without_patch": _label_profile([samples[i] for i in rest], names),
            "occurrences": [members[i] for i in idx],
            "test": stats,
        }
        findings.append(make_finding(
            "trigger_patch", suspects=[samples[i].key for i in idx], evidence=evidence,
            message=(
                f"a {config.block_px}px-block pattern recurs in {len(idx)} images, {len(seed_member_docs)} of them "
                f"label-anomalous (p={p_pattern:.2e}); "
                f"{'fixed' if evidence['fixed_position'] else 'varying'} position"
            ),
        ))
    return findings


def _label_profile(samples: Sequence[Sample], names: Mapping[int, str]) -> dict:
    n = len(samples)
    per_class: dict[str, int] = {}
    empty = 0
    for s in samples:
        if not s.boxes:
            empty += 1
        for box in s.boxes:
            name = names.get(box[0], str(box[0]))
            per_class[name] = per_class.get(name, 0) + 1
    total = sum(per_class.values())
    return {
        "images": n,
        "empty_label_fraction": round(empty / n, 4) if n else 0.0,
        "class_share": {k: round(v / total, 4) for k, v in sorted(per_class.items())} if total else {},
    }
