"""Pinned model files: moved to :mod:`secure_data.models.pinned` (shared with the poisoning stage)."""

from __future__ import annotations

from secure_data.models.pinned import ModelIntegrityError, normalise_sha256, private_copy, read_pinned

__all__ = ["ModelIntegrityError", "normalise_sha256", "private_copy", "read_pinned"]
