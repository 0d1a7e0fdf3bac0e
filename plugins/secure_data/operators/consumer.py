"""The training side in one decorator: ``@package_consumer("<dataset>")`` on a function of the opened package.

::

    @package_consumer("street_scenes")
    def train(package: OpenedPackage, epochs: int = 1) -> dict:
        ...  # package.path: the verified, decrypted dataset in private scratch; package.data_yaml

    with DAG("train_street_scenes", schedule=[package_asset("street_scenes")], ...):
        train(epochs=3)

Calling the decorated function inside a DAG adds a :class:`~secure_data.operators.handoff.PackageConsumerOperator`
(built on :func:`secure_data.handoff.consumer.open_package`) whose trust anchors are the trainer worker's
deployment configuration, the same as ``dags/secure_training.py``: the trainer's Vault connection
(``SECURE_DATA_TRAINER_VAULT_CONN_ID``), the signing and data keys (``SECURE_DATA_SIGNING_KEY``,
``SECURE_DATA_DATA_KEY``), the allowed sanitization policies (``SECURE_DATA_TRAINER_POLICY_DIGESTS``, else the
worker's own policy) and the train queue. The package comes from the triggering event on the dataset's Asset;
a manual run names it in its conf (``{"package_uri": ..., "package_id": ...}``). The scratch copy is wiped
when the function returns or raises; return only non-secret values (they go to XCom).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from secure_data import settings
from secure_data.assets import DEFAULT_PACKAGE_NAME, package_asset
from secure_data.operators.handoff import PackageConsumerOperator
from secure_data.policy.anchors import data_key_name, signing_key_name, trainer_vault_conn_id

__all__ = ["PackageConsumerOperator", "package_consumer"]

# Manual runs: the package named in the run's conf (Asset-triggered runs use the event instead).
MANUAL_PACKAGE_URI = "{{ (dag_run.conf or {}).get('package_uri') or '' }}"
MANUAL_PACKAGE_ID = "{{ (dag_run.conf or {}).get('package_id') or '' }}"


def package_consumer(
    dataset: str = DEFAULT_PACKAGE_NAME, *, task_id: str | None = None, **operator_kwargs: Any,
) -> Callable[[Callable[..., Any]], Callable[..., PackageConsumerOperator]]:
    """Decorate ``f(package: OpenedPackage, **kwargs)``; calling the result adds the consuming task.

    :param dataset: the dataset name given to ``sanitize_dataset`` (its packages' Asset is
        ``package_asset(dataset)``).
    :param task_id: default: the function's name.
    :param operator_kwargs: any other ``PackageConsumerOperator`` / ``BaseOperator`` argument (``retries``,
        ``pool``, ``storage_secret``, ``scratch_parent``...); the trust anchors default to the deployment's.

    The call's keyword arguments become ``op_kwargs`` (templated); it returns the operator, so it can be wired
    with ``>>``.
    """
    def decorate(fn: Callable[..., Any]) -> Callable[..., PackageConsumerOperator]:
        if not callable(fn):
            raise TypeError("package_consumer decorates a function f(package, **kwargs)")

        @functools.wraps(fn)
        def add_task(**op_kwargs: Any) -> PackageConsumerOperator:
            kwargs: dict[str, Any] = {
                "task_id": task_id or fn.__name__,
                "asset": package_asset(dataset),
                "package_uri": MANUAL_PACKAGE_URI,
                "expected_package_id": MANUAL_PACKAGE_ID,
                "vault_conn_id": trainer_vault_conn_id(),
                "signing_key": signing_key_name(),
                "data_key": data_key_name(),
                "allowed_policy_digests": "deployment",
                "queue": settings.train_queue(),
                **operator_kwargs,
            }
            return PackageConsumerOperator(python_callable=fn, op_kwargs=op_kwargs, **kwargs)

        return add_task

    return decorate

