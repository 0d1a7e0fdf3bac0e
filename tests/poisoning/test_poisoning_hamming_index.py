"""Multi-index hashing finds exactly the pairs a brute-force scan finds, without a pair loop."""

from __future__ import annotations

import numpy as np
import pytest

from secure_data.poisoning.hamming_index import brute_force_pairs, near_pairs, plan_index


def _planted(n: int, seed: int, max_flips: int = 10):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    src = rng.integers(0, n, size=n // 5)
    copies = base[src].copy()
    for k in range(len(copies)):
        for bit in rng.choice(64, size=int(rng.integers(0, max_flips + 1)), replace=False):
            copies[k] ^= np.uint64(1) << np.uint64(int(bit))
    return np.concatenate([base, copies])


def _as_set(pairs):
    i, j, d = pairs
    return set(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))


@pytest.mark.parametrize("radius", [0, 1, 4, 8, 12])
@pytest.mark.parametrize("n", [2, 300, 2500])
def test_same_pairs_as_brute_force(n, radius):
    hashes = _planted(n, seed=n + radius)
    found = near_pairs(hashes, radius)
    assert len(found[0]) == len(_as_set(found)), "a pair was reported twice"
    assert _as_set(found) == _as_set(brute_force_pairs(hashes, radius))
    assert all(i < j for i, j, _ in _as_set(found))


@pytest.mark.parametrize("chunks", [3, 4, 5, 9])
def test_any_chunking_is_exact(chunks):
    hashes = _planted(800, seed=chunks)
    assert _as_set(near_pairs(hashes, 8, chunks=chunks)) == _as_set(brute_force_pairs(hashes, 8))


def test_identical_values_are_pairs_at_distance_zero():
    hashes = np.array([5, 5, 5, 2**64 - 1], dtype=np.uint64)
    assert _as_set(near_pairs(hashes, 0)) == {(0, 1, 0), (0, 2, 0), (1, 2, 0)}
    assert _as_set(near_pairs(np.array([], np.uint64), 3)) == set()


def test_plan_grows_chunks_with_log_n_and_stays_pigeonhole_safe():
    small, big = plan_index(1_000, 8), plan_index(1_000_000, 8)
    assert sum(small.widths) == sum(big.widths) == 64
    assert len(big.widths) == 3 and big.chunk_radius == 2  # ~21-bit chunks for a million hashes
    assert len(small.widths) * (small.chunk_radius + 1) > 8  # pigeonhole: m * (r_chunk + 1) > r
    with pytest.raises(ValueError):
        plan_index(10, 64)
    with pytest.raises(ValueError, match="probes"):
        plan_index(10, 8, chunks=1)  # 64-bit chunk at radius 8: billions of probes
