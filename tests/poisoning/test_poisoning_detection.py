"""The benchmark in small (BENCHMARKS.md): seeded attacks, recall / precision, clean false positives.

400 images instead of 600 and fewer rates, same generator, same stage, same targets:
recall >= 0.95 at precision >= 0.9 per attack at 5 % and 10 %; clean false-positive rate <= 1 %.
"""

from __future__ import annotations

import pytest

from secure_data_testkit.attacks import ATTACKS, inject_attack

CASES = [(attack, 0.10) for attack in ATTACKS] + [("trigger_random", 0.05), ("label_flip", 0.05)]
SHIFTS = {"box_shift": (0.5, 1.0), "box_shift_small": (0.1, 0.25)}  # in box sizes


def test_clean_dataset_false_positive_rate(clean_root, screen):
    s = screen(clean_root)
    flagged = s.suspects()
    assert len(flagged) / s.result.counts["images"] <= 0.01, s.findings


@pytest.mark.parametrize("attack, rate", [*CASES, ("box_shift_small", 0.05)],
                         ids=[f"{a}-{r}" for a, r in [*CASES, ("box_shift_small", 0.05)]])
def test_attack_is_found(clean_root, tmp_path, screen, attack, rate):
    kwargs = {"shift": SHIFTS[attack]} if attack in SHIFTS else {}
    attack = attack.removesuffix("_small")
    ds = inject_attack(clean_root, tmp_path / "attacked", attack=attack, rate=rate, seed=5, **kwargs)
    assert len(ds.poisoned) == round(rate * ds.n_samples)
    s = screen(ds.root)
    flagged = s.suspects()
    tp = len(flagged & ds.poisoned)
    recall, precision = tp / len(ds.poisoned), tp / max(1, len(flagged))
    assert recall >= 0.95 and precision >= 0.9, (recall, precision, sorted(flagged ^ ds.poisoned))
    # and the check built for the attack is the one that names them
    expected = {"label_flip": "duplicate_label_conflict", "split_leak": "split_leakage",
                "box_shift": "box_misaligned"}.get(attack, "trigger_patch")
    assert len(s.suspects(expected) & ds.poisoned) >= 0.9 * len(ds.poisoned), expected
