"""``StageOperator``: what every stage operator does the same way, so each ``execute`` is a few lines.

- **Run layout**: the run-scoped folder under ``output_root`` (templated; default the deployment's).
- **XCom conversion**: an upstream ``StageResult`` XCom (dict, or JSON text when rendered without
  native objects) in; ``StageResult.to_xcom()`` out (also handed to the OpenLineage facets).
- **Policy overrides**: the keyword arguments named in ``policy_fields`` are templated (each one is a
  template field, so ``gx_policy="{{ params.gx }}"`` renders) and checked when the DAG file is
  parsed if they are literals, again after rendering.
- **One failure behaviour**: a check with policy ``fail`` (``StageFailed``) fails the task with
  ``AirflowFailException``: no retry, the data will not change; outputs were written first.
- **Quarantine-rate gate** (deployment setting, never a param): above
  ``SECURE_DATA_MAX_QUARANTINE_PERCENT`` % of a stage's input files quarantined, the task fails
  (``SECURE_DATA_QUARANTINE_GATE=fail``, the default) or logs a warning (``warn``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.sdk import BaseOperator

from secure_data.lineage.mixin import OpenLineageMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from secure_data.dataset.stage import RunLayout, StageResult

ACTIONS: tuple[str, ...] = ("fail", "warn", "quarantine")
MAX_QUARANTINE_ENV = "SECURE_DATA_MAX_QUARANTINE_PERCENT"
GATE_ENV = "SECURE_DATA_QUARANTINE_GATE"


def is_template(value: Any) -> bool:
    """A value (or a dict/list holding one) that Airflow will render at run time: checked after rendering."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_template(v) for v in value)
    return False


def as_mapping(value: Any, what: str) -> dict[str, Any]:
    """A dict argument that may arrive as JSON text (a template rendered without native objects)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    return dict(value)


def as_list(value: Any, what: str) -> list[Any]:
    """A list argument (a list, a ``LazyXComSequence``, or JSON text) as a list."""
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, Mapping | bytes) or not hasattr(value, "__iter__"):
        raise TypeError(f"{what} must be a list, got {type(value).__name__}")
    return list(value)


def quarantine_gate() -> tuple[float | None, str]:
    """``(max percent or None, "fail" | "warn")`` from the worker's deployment environment."""
    raw = os.environ.get(MAX_QUARANTINE_ENV, "").strip()
    mode = os.environ.get(GATE_ENV, "fail").strip().lower() or "fail"
    if mode not in ("fail", "warn"):
        raise ValueError(f"{GATE_ENV}={mode!r}: must be 'fail' or 'warn'")
    if not raw:
        return None, mode
    try:
        limit = float(raw)
    except ValueError:
        raise ValueError(f"{MAX_QUARANTINE_ENV}={raw!r}: must be a percentage (0-100)") from None
    if not 0 <= limit <= 100:
        raise ValueError(f"{MAX_QUARANTINE_ENV}={raw!r}: must be a percentage (0-100)")
    return limit, mode


class StageOperator(OpenLineageMixin, BaseOperator):
    """Base of the stage operators (integrity, poisoning, anonymize merge, hand-off).

    Subclasses set ``policy_fields`` (templated "fail" | "warn" | "quarantine" overrides) and
    implement ``run_stage(context, layout) -> StageResult``.

    :param output_root: root of the run-scoped folders (default ``SECURE_DATA_OUTPUT_ROOT``). Templated.
    """

    template_fields: Sequence[str] = ("output_root",)
    policy_fields: ClassVar[Sequence[str]] = ()
    policy_choices: ClassVar[Mapping[str, Sequence[str]]] = {}  # per-field allowed values, else ACTIONS
    stage_name: ClassVar[str] = ""

    def __init__(self, *, output_root: str | None = None, **kwargs: Any) -> None:
        policies = {name: kwargs.pop(name, None) for name in self.policy_fields}
        super().__init__(**kwargs)
        self.output_root = output_root
        for name, value in policies.items():
            setattr(self, name, value)
        self.check_policies(rendered=False)  # fail at DAG parse time, not at 3 a.m.

    # --- policy overrides ---------------------------------------------------------------------------

    @property
    def policies(self) -> dict[str, Any]:
        """The policy overrides as given (rendered, inside ``execute``)."""
        return {name: getattr(self, name) for name in self.policy_fields}

    def check_policies(self, *, rendered: bool = True) -> dict[str, str]:
        """The overrides that were given, each checked; a template is checked once it is rendered."""
        given = {}
        for name, value in self.policies.items():
            if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
                continue
            if not rendered and is_template(value):
                continue
            allowed = tuple(self.policy_choices.get(name, ACTIONS))
            if value not in allowed:
                raise ValueError(f"{type(self).__name__}: {name}={value!r}: must be one of {allowed}")
            given[name] = value
        return given

    # --- run layout and XCom ------------------------------------------------------------------------

    def layout(self, context: Context) -> RunLayout:
        from secure_data.dataset.stage import RunLayout
        from secure_data.settings import output_root

        return RunLayout.for_run(self.output_root or output_root(), context["dag"].dag_id, context["run_id"])

    @staticmethod
    def upstream_result(value: Any, what: str = "upstream") -> StageResult:
        from secure_data.dataset.stage import StageResult

        return StageResult.from_xcom(as_mapping(value, what))

    # --- the one execute ----------------------------------------------------------------------------

    def run_stage(self, context: Context, layout: RunLayout) -> StageResult:
        raise NotImplementedError

    def describe(self, result: StageResult) -> None:
        """Log one line about the result (override for stage-specific figures)."""
        c = result.counts
        self.log.info("%s: %s of %s files accepted, %s quarantined; manifest %s (%s)", result.stage, c.accepted,
                      c.files, c.quarantined, result.manifest_path, result.manifest_digest)

    def execute(self, context: Context) -> dict[str, Any]:
        from secure_data.dataset.stage import StageFailed

        self.check_policies()
        try:
            result = self.run_stage(context, self.layout(context))
        except StageFailed as exc:
            self.describe(exc.result)
            self.log.error("%s failed: %s", exc.result.stage, exc)
            self.lineage_result(exc.result.to_xcom())
            self.fail(str(exc), exc)
        self.describe(result)
        self.gate(result)
        return self.lineage_result(result.to_xcom())

    def fail(self, message: str, cause: BaseException | None = None) -> NoReturn:
        """Fail the task without retries: a failed policy will not pass on the same data."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(message) from cause

    def gate(self, result: StageResult) -> None:
        """The deployment's quarantine-rate gate over this stage's files (accepted + quarantined = input)."""
        limit, mode = quarantine_gate()
        files, quarantined = result.counts.files, result.counts.quarantined
        if limit is None or not files or quarantined is None:
            return
        percent = 100.0 * quarantined / files
        if percent <= limit:
            return
        message = (f"{result.stage}: {quarantined} of {files} files quarantined ({percent:.1f} %), above the "
                   f"deployment's limit of {limit:g} % ({MAX_QUARANTINE_ENV}); manifest {result.manifest_path}")
        if mode == "warn":
            self.log.warning("%s", message)
        else:
            self.fail(message)
