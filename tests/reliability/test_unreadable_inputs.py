"""Permission-denied inputs: a mode-000 image and a mode-000 image folder.

As root, mode 000 stops nothing (CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH bypass it), and these
tests run as root in the container. So the integrity run happens in a child process that
``setpriv`` starts without those two capabilities; as any other user it needs no help. Either
way the stage must record one quarantined entry with reason ``unreadable`` (never crash,
never drop the file or the folder silently) and let the partners follow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, sys, warnings
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from secure_data.dataset.stage import RunLayout
    from secure_data.integrity import IntegrityConfig, run_integrity
    from secure_data_testkit.badinputs import count_entries, inject_bad_inputs
    from secure_data_testkit.datasets import make_yolo_dataset

    base = Path(sys.argv[2])
    root = make_yolo_dataset(base / "dataset", n_train=4, n_val=1, seed=3)
    bad = inject_bad_inputs(root, kinds=["permission_denied", "unreadable_directory"])
    result = run_integrity(root, RunLayout.for_run(base / "out", "dag", "run"), config=IntegrityConfig(workers=2))
    records = [json.loads(line) for line in Path(result.manifest_path).read_text().splitlines()[1:]]
    print(json.dumps({
        "expectations": [[e.path, e.outcome, list(e.codes)] for b in bad for e in b.expectations],
        "records": {r["path"]: [r["status"], [x["code"] for x in r["reasons"]]] for r in records},
        "entries": count_entries(root), "counts": dict(result.counts),
        "quarantine": str(base / "out"),
    }))
""")


def _without_dac_override() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: mode 000 cannot be made unreadable here")
    caps = "-dac_override,-dac_read_search"
    probe = subprocess.run([setpriv, "--bounding-set", caps, "--inh-caps", caps, "--", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot drop capabilities here: {probe.stderr.strip()}")
    return [setpriv, "--bounding-set", caps, "--inh-caps", caps, "--"]


def test_mode_000_file_and_folder_are_quarantined_as_unreadable(tmp_path):
    cmd = [*_without_dac_override(), sys.executable, "-c", CHILD, str(REPO / "plugins"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        for rel in ("dataset/images/train/bad_locked", "dataset/images/train/bad_permission_denied.jpg"):
            if (tmp_path / rel).exists():
                os.chmod(tmp_path / rel, 0o700)
    expectations = {path: (outcome, codes) for path, outcome, codes in out["expectations"]}
    # Without the capabilities the child could not read them, so inject_bad_inputs expected "unreadable".
    assert expectations["images/train/bad_permission_denied.jpg"] == ("quarantined", ["unreadable"])
    assert expectations["images/train/bad_locked"] == ("quarantined", ["unreadable"])
    records = out["records"]
    for path, (outcome, codes) in expectations.items():
        status, got = records[path]
        assert status == outcome and set(codes) <= set(got), (path, status, got)
    assert records["labels/train/bad_permission_denied.txt"] == ["quarantined", ["sample_image_rejected"]]
    assert out["counts"]["files"] == out["entries"] == len(records)
    assert out["counts"]["accepted"] + out["counts"]["quarantined"] == out["counts"]["files"]
    reasons = sorted(p.name for p in Path(out["quarantine"]).rglob("*.reason.json"))
    assert "bad_locked.reason.json" in reasons and "bad_permission_denied.jpg.reason.json" in reasons
