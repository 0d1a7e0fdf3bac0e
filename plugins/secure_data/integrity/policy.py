"""Integrity policies: which action a finding gets, the sample rule, the stage verdict.

Each finding code belongs to a policy (``codes.POLICY_OF``) whose action ("accept" | "warn" |
"quarantine" | "fail") comes from the :class:`IntegrityConfig`; a file takes the strongest action of
its findings, and a sample (image + label) is withheld as a unit.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from secure_data.dataset.layout import DATA_YAML
from secure_data.dataset.manifest import FileRecord
from secure_data.integrity import codes
from secure_data.integrity.codes import FAIL, POLICY_OF, QUARANTINE, WARN, FileFinding, stronger
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.files import FileResult


def action_for(code: str, config: IntegrityConfig) -> str:
    policy = POLICY_OF.get(code)
    return config.policy(policy) if policy else QUARANTINE


def file_action(path: str, code: str, config: IntegrityConfig) -> str:
    """The action for a finding on ``path``. data.yaml cannot be quarantined without orphaning every
    label (it holds the class names), so what would quarantine it fails the stage instead."""
    action = action_for(code, config)
    return FAIL if path == DATA_YAML and action == QUARANTINE else action


def worst_action(found: Iterable[FileFinding], config: IntegrityConfig, path: str = "") -> str | None:
    action = None
    for f in found:
        action = stronger(action, file_action(path, f.code, config))
    return action


def rejected_samples(results: Mapping[str, FileResult], findings: Mapping[str, list[FileFinding]],
                      config: IntegrityConfig) -> tuple[set[str], set[str]]:
    """(paths rejected by their own findings, samples that contain one)."""
    rejected = {p for p, fs in findings.items() if worst_action(fs, config, p) in (QUARANTINE, FAIL)}
    samples = {results[p].record.sample for p in rejected if results[p].record.sample is not None}
    return rejected, samples


def add_sample_findings(results: Mapping[str, FileResult], findings: dict[str, list[FileFinding]],
                        config: IntegrityConfig) -> None:
    """A sample (image + label) is the unit: one rejected file rejects its partner (a finding naming why)."""
    rejected, bad_samples = rejected_samples(results, findings, config)
    rejected_in: dict[str, list[str]] = defaultdict(list)
    for p in sorted(rejected):
        if results[p].record.sample is not None:
            rejected_in[results[p].record.sample].append(p)
    for path, res in results.items():
        sample = res.record.sample
        if path in rejected or sample not in bad_samples:
            continue
        culprits = rejected_in[sample]
        culprit_codes = sorted({f.code for p in culprits for f in findings[p]
                                if action_for(f.code, config) in (QUARANTINE, FAIL)})
        kind = results[culprits[0]].record.kind
        code = codes.SAMPLE_IMAGE_REJECTED if kind == "image" else codes.SAMPLE_LABEL_REJECTED
        findings[path].append(FileFinding(code, f"{kind} of sample {sample} rejected: {', '.join(culprit_codes)}"))


def verdict_of(records: Iterable[FileRecord], dataset_findings: Iterable[FileFinding], config: IntegrityConfig,
               ) -> tuple[str, list[str], dict[str, Any]]:
    """``(verdict, fired fail codes, header facts)``: the strongest action per code over the files'
    reasons and the dataset-level findings; "fail" if any code's action is fail, "warn" if any fired."""
    actions: dict[str, str] = {}
    reason_counts: Counter[str] = Counter()
    for rec in records:
        for r in rec.reasons:
            reason_counts[r.code] += 1
            actions[r.code] = stronger(actions.get(r.code), file_action(rec.path, r.code, config))
    dataset_rows = [{"code": f.code, "detail": f.detail, "action": action_for(f.code, config)}
                    for f in dataset_findings]
    for row in dataset_rows:
        actions[row["code"]] = stronger(actions.get(row["code"]), row["action"])
    fired = sorted(c for c, a in actions.items() if a == FAIL)
    verdict = FAIL if fired else (WARN if actions else "pass")
    return verdict, fired, {"dataset_findings": dataset_rows, "reason_counts": dict(sorted(reason_counts.items())),
                            "actions": dict(sorted(actions.items())), "verdict": verdict}
