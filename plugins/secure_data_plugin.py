"""Registers the secure-data Airflow plugin when the package is used from the plugins folder.

After ``pip install secure-data`` the ``airflow.plugins`` entry point registers it instead;
defining it here too would register it twice.
"""

from __future__ import annotations

from importlib.metadata import entry_points

if not any(ep.value.startswith("secure_data.") for ep in entry_points(group="airflow.plugins")):
    from secure_data.plugin import SecureDataPlugin

    __all__ = ["SecureDataPlugin"]
