"""All pairs of 64-bit hashes within a Hamming radius, sub-quadratically (multi-index hashing).

Multi-index hashing (Norouzi, Punjani, Fleet, CVPR 2012): cut every hash into
``m`` disjoint chunks. If two hashes differ in at most ``r`` bits, then by the
pigeonhole principle at least one chunk differs in at most ``floor(r / m)`` bits.
So, per chunk, we bucket the hashes by the chunk's value (a counting sort) and,
for every hash, probe only the buckets whose chunk value is within
``floor(r / m)`` bits of its own. Candidates are then checked on all 64 bits.

Choosing ``m`` so that a chunk has about ``log2(n)`` bits keeps the expected
number of random candidates per probe near one, so the work grows like
``n * probes`` rather than ``n**2`` (for one million hashes and r = 8: three
21/22-bit chunks, 254 probes each). Everything is vectorised NumPy: no Python
loop runs per hash.

A pair is reported once: by the first chunk that matches it within the chunk
radius, and only as ``i < j``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

_TABLE_MAX_BITS = 22  # direct-address bucket table up to 4 Mi entries (16 MiB); binary search beyond
_MAX_PROBES = 100_000  # per hash: beyond this a plan is a mistake, not a search


@dataclass(frozen=True)
class IndexPlan:
    """How the 64 bits are cut: chunk bit offsets/widths and the per-chunk probe radius."""

    offsets: tuple[int, ...]
    widths: tuple[int, ...]
    chunk_radius: int

    @property
    def probes_per_hash(self) -> int:
        return sum(sum(math.comb(w, k) for k in range(self.chunk_radius + 1)) for w in self.widths)


def plan_index(n: int, radius: int, chunks: int | None = None) -> IndexPlan:
    """Pick the chunking for ``n`` hashes and Hamming radius ``radius`` (0..63)."""
    if not 0 <= radius < 64:
        raise ValueError(f"radius must be in 0..63, not {radius}")
    if chunks is None:
        bits_wanted = max(8, math.ceil(math.log2(max(n, 2))))
        chunks = max(1, min(radius + 1, 64 // bits_wanted))
    if not 1 <= chunks <= 64:
        raise ValueError(f"chunks must be in 1..64, not {chunks}")
    base, extra = divmod(64, chunks)
    widths = tuple(base + (1 if k < extra else 0) for k in range(chunks))
    offsets = tuple(sum(widths[:k]) for k in range(chunks))
    plan = IndexPlan(offsets=offsets, widths=widths, chunk_radius=radius // chunks)
    if plan.probes_per_hash > _MAX_PROBES:
        raise ValueError(f"{chunks} chunk(s) at radius {radius} need {plan.probes_per_hash} probes per hash; "
                         f"use more chunks (or a smaller radius)")
    return plan


def _flip_masks(width: int, radius: int):
    import numpy as np

    masks = [0]
    for k in range(1, radius + 1):
        for bits in itertools.combinations(range(width), k):
            masks.append(sum(1 << b for b in bits))
    return np.array(masks, dtype=np.uint64)


def _chunk(hashes, offset: int, width: int):
    import numpy as np

    return (hashes >> np.uint64(offset)) & np.uint64((1 << width) - 1)


def near_pairs(hashes, radius: int, *, chunks: int | None = None, query_batch: int = 1 << 18):
    """Return ``(i, j, distance)`` int arrays for every pair ``i < j`` within ``radius`` bits.

    ``hashes`` is a 1-D array (or sequence) of unsigned 64-bit integers. Identical
    values are ordinary pairs at distance 0: collapse them first if a value may
    repeat many times, or the output itself becomes quadratic.
    """
    import numpy as np

    h = np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64))
    n = int(h.shape[0])
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))
    if n < 2:
        return empty
    plan = plan_index(n, radius, chunks)
    subs = [_chunk(h, off, w) for off, w in zip(plan.offsets, plan.widths, strict=True)]
    out_i, out_j, out_d = [], [], []
    for c, (sub, width) in enumerate(zip(subs, plan.widths, strict=True)):
        order = np.argsort(sub, kind="stable")
        sorted_sub = sub[order]
        if width <= _TABLE_MAX_BITS:
            counts = np.bincount(sub.astype(np.int64), minlength=1 << width)
            starts = np.cumsum(counts) - counts

            def bucket(q, counts=counts, starts=starts):
                qi = q.astype(np.int64)
                return starts[qi], counts[qi]
        else:

            def bucket(q, sorted_sub=sorted_sub):
                lo = np.searchsorted(sorted_sub, q, side="left")
                hi = np.searchsorted(sorted_sub, q, side="right")
                return lo, hi - lo

        for mask in _flip_masks(width, plan.chunk_radius):
            for b0 in range(0, n, query_batch):
                qidx = np.arange(b0, min(n, b0 + query_batch), dtype=np.int64)
                start, count = bucket(sub[qidx] ^ mask)
                total = int(count.sum())
                if total == 0:
                    continue
                qi = np.repeat(qidx, count)
                run_start = np.repeat(np.cumsum(count) - count, count)
                pos = np.repeat(start, count) + (np.arange(total, dtype=np.int64) - run_start)
                cj = order[pos]
                keep = qi < cj
                qi, cj = qi[keep], cj[keep]
                dist = np.bitwise_count(h[qi] ^ h[cj]).astype(np.int64)
                keep = dist <= radius
                qi, cj, dist = qi[keep], cj[keep], dist[keep]
                # Report each pair in the first chunk that can see it (no global de-duplication pass).
                for prev in range(c):
                    fresh = np.bitwise_count(subs[prev][qi] ^ subs[prev][cj]) > plan.chunk_radius
                    qi, cj, dist = qi[fresh], cj[fresh], dist[fresh]
                out_i.append(qi)
                out_j.append(cj)
                out_d.append(dist)
    if not out_i:
        return empty
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def brute_force_pairs(hashes, radius: int):
    """Quadratic reference implementation (tests and the benchmark's small-n peer)."""
    import numpy as np

    h = np.asarray(hashes, dtype=np.uint64)
    out_i, out_j, out_d = [], [], []
    for i in range(len(h) - 1):
        d = np.bitwise_count(h[i] ^ h[i + 1:]).astype(np.int64)
        (js,) = np.nonzero(d <= radius)
        out_i.append(np.full(len(js), i, np.int64))
        out_j.append(js + i + 1)
        out_d.append(d[js])
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
