"""The deployment policy: what the deployment's operators decide and no trigger can weaken.

A policy is a small YAML/JSON document read by the workers from deployment configuration
(``SECURE_DATA_POLICY_FILE``; without it, the built-in policy shipped with this package).
It names the allowed models with their SHA-256 pins, the protected classes, the floors of
detection and verification (highest confidence thresholds, fewest passes, smallest inference
size and padding), the verifiers and the residual policy.

Run parameters may only *tighten* it (:func:`effective_anonymize_options`): a lower
confidence threshold, more passes, more protected classes, a stricter residual policy. A
weaker value, or any attempt to choose a model, raises :class:`PolicyViolation` whose message
says which value, what the policy allows, and the policy's digest.

The digest (``sha256:`` of the canonical JSON of the resolved policy, model *paths* left out:
where a file lies is not what it is) goes into the signed package manifest; the training side
accepts only packages whose policy digest is on its own allow-list.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secure_data.dataset.manifest import canonical_json

SCHEMA = "secure-data/deployment-policy/v1"
POLICY_FILE_ENV = "SECURE_DATA_POLICY_FILE"
BUILTIN_POLICY = Path(__file__).with_name("builtin.yaml")

# Orders from weakest to strictest: a request may move right, never left.
RESIDUAL_ORDER = ("quarantine", "fail")
ON_RESIDUAL_ORDER = ("reobfuscate", "quarantine")
MODES = ("blur", "pixelate", "fill")
# Request keys that would choose a model: models come from the policy only.
MODEL_KEYS = frozenset({"model_path", "model_sha256", "face_model_path", "face_model_sha256", "detectors",
                        "verifiers", "model_kind", "face_model_role", "backbone_model", "backbone_model_sha256"})
# Request spellings (DAG params) -> policy fields.
REQUEST_ALIASES = {"confidence": "conf", "verify_confidence": "verify_conf", "box_padding": "padding"}
# Options that are not about how much is protected; passed through unchecked.
FREE_OPTIONS = ("shape", "device", "batch_size")


class PolicyError(ValueError):
    """The policy document itself is missing, unreadable or invalid."""


class PolicyViolation(ValueError):
    """A run asked for something weaker than the deployment policy (or to choose a model)."""


@dataclass(frozen=True)
class DeploymentPolicy:
    """A resolved deployment policy (models included). Build with :func:`load_policy`."""

    detectors: tuple[Mapping[str, Any], ...]
    verifiers: tuple[Mapping[str, Any], ...] = ()
    classes: tuple[str, ...] = ("face", "plate")  # protected detector classes (a request may add)
    label_classes: tuple[str, ...] = ()  # protected *label* class names (a request may add)
    conf: float = 0.25  # highest detection threshold allowed (a request may lower it)
    verify_conf: float = 0.10  # highest verification threshold allowed
    max_passes: int = 2  # fewest re-obfuscation passes allowed (a request may raise it)
    min_face_px: int | None = None  # largest "smallest face" allowed (a request may lower it)
    imgsz: int = 640  # smallest inference size allowed
    padding: float = 0.1  # smallest box padding allowed
    modes: tuple[str, ...] = MODES  # obfuscation modes allowed
    residual_policy: str = "quarantine"  # a request may tighten to "fail"
    on_residual: str = "reobfuscate"  # a request may tighten to "quarantine"
    name: str = "builtin"
    source: str = "builtin"  # where it was read from (not part of the digest)
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown-to-us fields kept for the digest

    def __post_init__(self) -> None:
        problems = []
        for spec in (*self.detectors, *self.verifiers):
            if not spec.get("model_path") or not spec.get("model_sha256"):
                problems.append(f"detector {spec.get('name') or spec.get('model_path')!r} needs model_path "
                                "and model_sha256")
        if not self.classes:
            problems.append("classes (protected classes) must not be empty")
        for name in ("conf", "verify_conf"):
            if not 0.0 < float(getattr(self, name)) < 1.0:
                problems.append(f"{name} must be in (0, 1)")
        if self.max_passes < 0:
            problems.append("max_passes must be >= 0")
        if self.residual_policy not in RESIDUAL_ORDER:
            problems.append(f"residual_policy must be one of {RESIDUAL_ORDER}")
        if self.on_residual not in ON_RESIDUAL_ORDER:
            problems.append(f"on_residual must be one of {ON_RESIDUAL_ORDER}")
        if not self.modes or set(self.modes) - set(MODES):
            problems.append(f"modes must be a non-empty subset of {MODES}")
        if problems:
            raise PolicyError(f"invalid deployment policy ({self.source}): " + "; ".join(problems))

    # --- identity ---------------------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The canonical content of the policy (what the digest covers): model pins, not model paths."""
        return {
            "schema": SCHEMA, "name": self.name,
            "detectors": [_identity(d) for d in self.detectors],
            "verifiers": [_identity(d) for d in self.verifiers],
            "classes": sorted(self.classes), "label_classes": sorted(self.label_classes),
            "conf": self.conf, "verify_conf": self.verify_conf, "max_passes": self.max_passes,
            "min_face_px": self.min_face_px, "imgsz": self.imgsz, "padding": self.padding,
            "modes": sorted(self.modes), "residual_policy": self.residual_policy, "on_residual": self.on_residual,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    def require_models(self) -> DeploymentPolicy:
        """This policy, if it names at least one model (a worker that anonymizes needs one)."""
        if not self.detectors:
            raise PolicyError(
                f"deployment policy {self.source!r} names no detector: list 'detectors' (model_path + model_sha256) "
                "in the policy file, or configure the deployment's model (SECURE_DATA_MODEL_PATH and "
                "SECURE_DATA_MODEL_SHA256) on the workers")
        return self

    @property
    def digest(self) -> str:
        return digest_of(self.document())

    def backbone(self) -> Mapping[str, Any] | None:
        """The model the poisoning stage's optional backbone check may load: the first Ultralytics
        ``.pt`` detector of the policy (or the policy's ``backbone`` entry), else None."""
        chosen = self.extra.get("backbone")
        if isinstance(chosen, Mapping):
            return chosen
        for spec in self.detectors:
            if spec.get("kind", "yolo") == "yolo" and str(spec["model_path"]).lower().endswith(".pt"):
                return spec
        return None


def digest_of(document: Mapping[str, Any]) -> str:
    """``sha256:`` of the canonical JSON (the manifests' canonical form)."""
    return "sha256:" + hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def _identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A detector as the digest sees it: its pin and behaviour, not the path it lies at."""
    out = {k: v for k, v in spec.items() if k != "model_path" and v is not None}
    out["model_sha256"] = str(spec["model_sha256"]).lower().removeprefix("sha256:")
    if "classes" in out:
        out["classes"] = list(out["classes"])
    return out


# --- loading -------------------------------------------------------------------------------------------

_FIELDS = ("detectors", "verifiers", "classes", "label_classes", "conf", "verify_conf", "max_passes",
           "min_face_px", "imgsz", "padding", "modes", "residual_policy", "on_residual", "name")


def policy_file() -> tuple[Path, str]:
    """(path, where it came from): ``SECURE_DATA_POLICY_FILE``, else the built-in policy."""
    configured = os.environ.get(POLICY_FILE_ENV, "").strip()
    if configured:
        return Path(configured), configured
    return BUILTIN_POLICY, "builtin"


def load_policy(path: str | os.PathLike | None = None) -> DeploymentPolicy:
    """Read and resolve the deployment policy (``path``, else :func:`policy_file`)."""
    import yaml  # PyYAML ships with Airflow

    if path is None:
        file, source = policy_file()
    else:
        file, source = Path(path), os.fspath(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read the deployment policy {source!r} ({POLICY_FILE_ENV}): "
                          f"{exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(raw.decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"deployment policy {source!r} is not valid UTF-8 YAML/JSON: {exc}") from None
    return policy_from_document(doc, source=source)


def policy_from_document(doc: Mapping[str, Any], *, source: str = "inline") -> DeploymentPolicy:
    if not isinstance(doc, Mapping):
        raise PolicyError(f"deployment policy {source!r} must be a mapping")
    if doc.get("schema", SCHEMA) != SCHEMA:
        raise PolicyError(f"deployment policy {source!r} has schema {doc.get('schema')!r}, expected {SCHEMA!r}")
    values = {k: doc[k] for k in _FIELDS if k in doc and doc[k] is not None}
    extra = {k: v for k, v in doc.items() if k not in (*_FIELDS, "schema", "models")}
    if "detectors" not in values:
        models = doc.get("models", "deployment")
        if models != "deployment":
            raise PolicyError(f"deployment policy {source!r}: 'models' must be 'deployment' or give 'detectors'")
        values["detectors"], env_verifiers = deployment_detectors()
        values.setdefault("verifiers", env_verifiers)
    for key in ("detectors", "verifiers"):
        values[key] = tuple(_detector(d, source) for d in values.get(key, ()))
    for key in ("classes", "label_classes", "modes"):
        if key in values:
            values[key] = tuple(str(v) for v in values[key])
    for key in ("conf", "verify_conf", "padding"):
        if key in values:
            values[key] = float(values[key])
    for key in ("max_passes", "imgsz", "min_face_px"):
        if key in values:
            values[key] = int(values[key])
    return DeploymentPolicy(**values, source=source, extra=extra)


def _detector(spec: Any, source: str) -> Mapping[str, Any]:
    if not isinstance(spec, Mapping):
        raise PolicyError(f"deployment policy {source!r}: a detector must be a mapping, got {spec!r}")
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items()}


def deployment_detectors() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(detectors, verifiers): the deployment's models when the policy file does not list them.

    The worker environment first (``SECURE_DATA_MODEL_PATH``/``SECURE_DATA_MODEL_SHA256``, and optionally
    ``SECURE_DATA_FACE_MODEL_PATH``/``SECURE_DATA_FACE_MODEL_SHA256`` for CenterFace, a face detector
    re-run in verification); without it, ``secure_data.anonymize.builtin.default_detectors()`` when the
    package ships one. Configuration of the worker, set by the deployment: never a run parameter.
    """
    detectors: list[dict[str, Any]] = []
    path, sha = os.environ.get("SECURE_DATA_MODEL_PATH", ""), os.environ.get("SECURE_DATA_MODEL_SHA256", "")
    if path and sha:
        detectors.append({"model_path": path, "model_sha256": sha, "kind": "yolo"})
    # The real face set (CenterFace detects, BlazeFace verifies) from SECURE_DATA_FACE_MODELS_DIR, added to
    # the deployment's own model: a run over real photographs never relies on that model alone for faces.
    from secure_data.anonymize import builtin

    found = builtin.default_detectors()
    if found:
        return (detectors + [_as_spec_dict(d) for d in found.get("detectors", ())],
                [_as_spec_dict(d) for d in found.get("verifiers", ())])
    face, face_sha = (os.environ.get("SECURE_DATA_FACE_MODEL_PATH", ""),
                      os.environ.get("SECURE_DATA_FACE_MODEL_SHA256", ""))
    if face and face_sha:
        detectors.append({"model_path": face, "model_sha256": face_sha, "kind": "centerface", "name": "centerface",
                          "classes": ("face",), "conf": builtin.CENTERFACE_CONF})
    return detectors, []


def _as_spec_dict(spec: Any) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    from dataclasses import asdict, is_dataclass

    if is_dataclass(spec):
        return {k: v for k, v in asdict(spec).items() if v is not None}
    raise PolicyError(f"default_detectors() returned {type(spec).__name__}, expected a mapping or DetectorSpec")


# --- tightening ----------------------------------------------------------------------------------------


def effective_anonymize_options(policy: DeploymentPolicy, request: Mapping[str, Any] | None = None,
                                *, supported: Sequence[str] | None = None) -> dict[str, Any]:
    """The anonymize options of a run: the policy, tightened by ``request`` (DAG params).

    Raises :class:`PolicyViolation` naming every value that is weaker than the policy, and any
    attempt to choose a model. ``supported``: the anonymize config's field names (fields it does
    not have yet, e.g. ``min_face_px``, are left out of the options rather than breaking it).
    """
    req = {REQUEST_ALIASES.get(k, k): v for k, v in dict(request or {}).items() if not _empty(v)}
    said = {REQUEST_ALIASES.get(k, k): k for k in dict(request or {})}  # messages use the caller's spelling
    problems: list[str] = []
    chosen = sorted(MODEL_KEYS & set(req))
    if chosen:
        problems.append(f"{', '.join(chosen)}: models and their pins come from the deployment policy only, "
                        "not from run parameters")
    out: dict[str, Any] = {
        "detectors": [dict(d) for d in policy.detectors],
        "verifiers": [dict(d) for d in policy.verifiers],
        "verify": True,
    }
    out["classes"] = _superset("classes", policy.classes, req.get("classes"), problems)
    out["label_classes"] = _superset("label_classes", policy.label_classes, req.get("label_classes"), problems)
    out["conf"] = _at_most(said.get("conf", "conf"), "detection confidence", policy.conf, req.get("conf"), problems)
    out["verify_conf"] = _at_most(said.get("verify_conf", "verify_conf"), "verification confidence", policy.verify_conf,
                                  req.get("verify_conf"), problems)
    out["max_passes"] = int(_at_least("max_passes", "re-obfuscation passes", policy.max_passes,
                                      req.get("max_passes"), problems))
    out["imgsz"] = int(_at_least("imgsz", "inference size", policy.imgsz, req.get("imgsz"), problems))
    out["padding"] = _at_least(said.get("padding", "padding"), "box padding", policy.padding, req.get("padding"), problems)
    if policy.min_face_px is not None or not _empty(req.get("min_face_px")):
        out["min_face_px"] = int(_at_most("min_face_px", "smallest face size", policy.min_face_px,
                                          req.get("min_face_px"), problems))
    out["residual_policy"] = _ordered("residual_policy", RESIDUAL_ORDER, policy.residual_policy,
                                      req.get("residual_policy"), problems)
    out["on_residual"] = _ordered("on_residual", ON_RESIDUAL_ORDER, policy.on_residual, req.get("on_residual"),
                                  problems)
    mode = str(req.get("mode", policy.modes[0]))
    if mode not in policy.modes:
        problems.append(f"mode {mode!r} is not allowed by the deployment policy (allowed: {list(policy.modes)})")
    out["mode"] = mode
    if str(req.get("verify", True)).strip().lower() in ("false", "0", "no", "off"):
        problems.append("verify: verification of every output is required by the deployment policy")
    for key in FREE_OPTIONS:
        if key in req:
            out[key] = req[key]
    unknown = sorted(set(req) - set(out) - MODEL_KEYS - {"verify"})
    if unknown:
        problems.append(f"unknown anonymize option(s) {unknown}")
    if problems:
        raise PolicyViolation(
            f"run parameters weaker than the deployment policy {policy.digest} ({policy.source}) refused: "
            + "; ".join(problems))
    if supported is not None:
        out = {k: v for k, v in out.items() if k in set(supported)}
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None"))


def _listish(value: Any) -> list[str]:
    if _empty(value):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return [str(v) for v in json.loads(text.replace("'", '"'))]
        return [v.strip() for v in text.split(",") if v.strip()]
    return [str(v) for v in value]


def _superset(name: str, floor: Sequence[str], value: Any, problems: list[str]) -> list[str]:
    asked = _listish(value)
    if not asked:
        return list(floor)
    missing = [c for c in floor if c not in asked]
    if missing:
        problems.append(f"{name} {asked} leaves out {missing}, which the deployment policy protects "
                        f"(you may add classes, not remove them)")
    return list(dict.fromkeys([*floor, *asked]))


def _number(name: str, value: Any, problems: list[str]) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        problems.append(f"{name} {value!r} is not a number")
        return None


def _at_most(name: str, what: str, ceiling: float | None, value: Any, problems: list[str]) -> Any:
    if _empty(value):
        return ceiling
    number = _number(name, value, problems)
    if number is None:
        return ceiling
    if ceiling is not None and number > ceiling:
        problems.append(f"{name} {number:g} is weaker than the deployment policy: {what} must be <= {ceiling:g}")
    return number


def _at_least(name: str, what: str, floor: float, value: Any, problems: list[str]) -> Any:
    if _empty(value):
        return floor
    number = _number(name, value, problems)
    if number is None:
        return floor
    if number < floor:
        problems.append(f"{name} {number:g} is weaker than the deployment policy: {what} must be >= {floor:g}")
    return number


def _ordered(name: str, order: Sequence[str], floor: str, value: Any, problems: list[str]) -> str:
    if _empty(value):
        return floor
    text = str(value)
    if text not in order:
        problems.append(f"{name} {text!r} is not one of {list(order)}")
        return floor
    if order.index(text) < order.index(floor):
        allowed = list(order[order.index(floor):])
        problems.append(f"{name} {text!r} is weaker than the deployment policy: allowed {allowed}")
    return text


def effective_document(policy: DeploymentPolicy, options: Mapping[str, Any]) -> dict[str, Any]:
    """What a package records as its effective policy: the deployment policy's digest and the
    options the run actually used (model pins, not paths)."""
    body = {k: v for k, v in options.items() if k not in ("detectors", "verifiers", "device", "batch_size")}
    return {
        "schema": SCHEMA + "#effective", "policy_digest": policy.digest, "policy_name": policy.name,
        "detectors": [_identity(d) for d in options.get("detectors", policy.detectors)],
        "verifiers": [_identity(d) for d in options.get("verifiers", policy.verifiers)],
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(body.items())},
    }
