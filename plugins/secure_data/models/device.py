"""The device a worker runs a model on."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda:0' when a GPU is visible, else 'cpu'; an explicit CUDA device must exist."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available on this worker")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) visible")
        return f"cuda:{index}"
    return "cpu"
