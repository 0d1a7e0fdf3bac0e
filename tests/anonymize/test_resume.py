"""A shard killed with SIGKILL half-way and run again ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from secure_data.anonymize import AnonymizeConfig, DetectorSpec, run_anonymize_shard
from secure_data.anonymize.audit import read_audit_lines
from secure_data.dataset.manifest import sha256_hex
from secure_data.dataset.stage import RunLayout
from secure_data_testkit.datasets import make_yolo_dataset
from secure_data_testkit.processes import python_env, sigkill_when

CHILD = """
import json, sys
from pathlib import Path
from secure_data.anonymize import AnonymizeConfig, run_anonymize_shard
from secure_data.dataset.stage import RunLayout, StageResult
args = json.loads(sys.argv[1])
run_anonymize_shard(StageResult.from_xcom(args["upstream"]), RunLayout(Path(args["layout"])),
                    config=AnonymizeConfig.from_dict(args["config"]), shard_index=0, shard_count=1)
"""


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_hex(p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


def test_sigkill_then_resume_gives_the_same_outputs(tmp_path, demo_model, make_upstream):
    root = make_yolo_dataset(tmp_path / "ds", n_train=40, n_val=8, width=480, height=360, seed=3)
    path, sha = demo_model
    config = AnonymizeConfig(detectors=(DetectorSpec(str(path), sha),), imgsz=320, batch_size=4, device="cpu")
    n_images = 48

    killed = RunLayout.for_run(tmp_path / "out", "dag", "killed")
    up = make_upstream(root, killed)
    audit = killed.stage("anonymize") / "shards" / "00000-of-00001" / "audit.jsonl"
    args = json.dumps({"upstream": up.to_xcom(), "layout": str(killed.root), "config": config.to_dict()})
    child = subprocess.Popen([sys.executable, "-c", CHILD, args], env=python_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    sigkill_when(child, lambda: audit.exists() and audit.read_bytes().count(b"\n") >= 12,
                 what="three durable batches (12 audit lines)", poll=0.01)
    done_before = len(read_audit_lines(audit))
    assert 12 <= done_before < n_images, done_before
    assert not (audit.parent / "result.json").exists()
    with open(audit, "ab") as fh:  # what a kill in the middle of a write would leave behind
        fh.write(b'{"schema":"secure-data/anonymize-audit/v1","path":"images/tr')

    resumed = run_anonymize_shard(up, killed, config=config)
    assert resumed["resumed"] >= done_before - config.batch_size and resumed["processed"] < n_images
    assert resumed["counts"]["images"] == n_images

    clean = RunLayout.for_run(tmp_path / "out", "dag", "clean")
    straight = run_anonymize_shard(make_upstream(root, clean), clean, config=config)
    assert straight["processed"] == n_images and straight["resumed"] == 0

    assert resumed["audit_digest"] == straight["audit_digest"]
    assert resumed["counts"] == straight["counts"]
    a, b = tree(killed.stage("anonymize")), tree(clean.stage("anonymize"))
    a.pop("shards/00000-of-00001/result.json")
    b.pop("shards/00000-of-00001/result.json")  # holds timings: the one file allowed to differ
    assert a == b
    assert sum(1 for p in a if p.startswith("data/images/")) + resumed["counts"]["quarantined"] == n_images
