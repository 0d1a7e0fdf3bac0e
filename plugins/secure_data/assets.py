"""The Airflow Assets that connect the sanitization DAG to training DAGs (import from both).

An event on ``PACKAGE_ASSET`` means "a new hand-off package was published".
Its ``extra`` carries only non-secret metadata (see ``EVENT_KEYS``); the package URI
in it is where the training side finds the package, the package id and manifest
digest are what it insists on finding there.
"""

from __future__ import annotations

from airflow.sdk import Asset

ASSET_URI_PREFIX = "secure-data://packages/"
DEFAULT_PACKAGE_NAME = "sanitized"
# Keys of an asset event's extra, all non-secret.
EVENT_KEYS = ("package_uri", "package_id", "name", "manifest_digest", "content_digest", "counts",
              "key_name", "key_version", "provenance_uri", "provenance_digest", "report_url")


def package_asset(name: str = DEFAULT_PACKAGE_NAME) -> Asset:
    """The Asset that receives one event per published package of the dataset ``name``."""
    return Asset(name=f"secure_data_packages_{name}", uri=f"{ASSET_URI_PREFIX}{name}", group="secure-data")


PACKAGE_ASSET = package_asset()
