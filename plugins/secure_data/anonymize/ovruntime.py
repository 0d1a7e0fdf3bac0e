"""OpenVINO on the CPU: the runtime both real face detectors use there when it is installed.

OpenVINO (Intel, Apache-2.0) compiles a network once for every image size (dynamic height
and width; the first image of a new size costs some preparation) and, on CPUs with AVX512-BF16 or AMX,
computes in bfloat16 by default: the same weights and the same pixels, about half the CPU
time of float32 (``bench/anonymize_real.py``; the real-photo judge scores the result).
``SECURE_DATA_INFERENCE_PRECISION=f32`` forces float32 (outputs then match the reference
runtimes to ~1e-5, see ``tests/anonymize/test_real_faces.py``). The precision actually used
is part of each detector's description in the audit.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

PRECISION_ENV = "SECURE_DATA_INFERENCE_PRECISION"


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def compile_cpu(model: Any, threads: int = 0) -> tuple[Any, str]:
    """Compile an ``openvino.Model`` (or a model path) for the CPU; returns it and the precision it computes in."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1}
    wanted = os.environ.get(PRECISION_ENV, "").strip().lower()
    if wanted:
        if wanted not in ("f32", "bf16", "f16"):
            raise ValueError(f"{PRECISION_ENV} must be f32, bf16 or f16, got {wanted!r}")
        config["INFERENCE_PRECISION_HINT"] = wanted
    compiled = ov.Core().compile_model(model, "CPU", config)
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type
    return compiled, precision.to_string() if hasattr(precision, "to_string") else str(precision)
