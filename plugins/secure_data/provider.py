"""Provider metadata, registered through the ``apache_airflow_provider`` entry point.

Airflow reads this to list the package under Providers and to show our connection
type in the connection form. Keep it import-light: it runs in every Airflow process.
"""

from __future__ import annotations

from typing import Any

from secure_data import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "secure-data",
        "name": "secure-data",
        "description": (
            "Sanitize image datasets before training: Vault-backed credentials and keys, integrity manifest, "
            "poisoning screening, GPU YOLO anonymization, encrypted and signed hand-off to training DAGs."
        ),
        "versions": [__version__],
        "connection-types": [
            {
                "hook-class-name": "secure_data.vault.hook.SecureVaultHook",
                "connection-type": "secure_data_vault",
            }
        ],
        "extra-links": ["secure_data.operators.links.RunReportLink"],
    }
