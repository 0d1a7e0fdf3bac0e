"""``OpenLineageMixin``: the OpenLineage hooks every secure-data operator shares.

The provider's listener calls ``get_openlineage_facets_on_complete`` / ``..._on_failure`` on the
operator instance that ran ``execute``; ``execute`` hands its XCom value to ``lineage_result`` on the
way out, so the facets describe exactly what the task returned (paths, digests, counts). Nothing is
imported and nothing is computed unless the provider is installed and configured: the cost without it
is one attribute assignment per task.
"""

from __future__ import annotations

from typing import Any


class OpenLineageMixin:
    """Mix in before ``BaseOperator``: ``class IntegrityOperator(OpenLineageMixin, BaseOperator)``."""

    _lineage_value: Any = None

    def lineage_result(self, value: Any) -> Any:
        """Remember the task's return value for the OpenLineage facets; returns it unchanged."""
        self._lineage_value = value
        return value

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from secure_data.lineage.facets import operator_lineage

        return operator_lineage(self, self._lineage_value, failed=False)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from secure_data.lineage.facets import operator_lineage

        return operator_lineage(self, self._lineage_value, failed=True)
