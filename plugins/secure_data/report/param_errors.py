"""Readable trigger-time refusals of a bad run parameter (an API-server root middleware).

Airflow refuses a run whose params fail their JSON Schema with HTTP 400 and the whole jsonschema
dump as the message ("Invalid input for param x: ... Failed validating 'pattern' in schema: {...}
On instance: ..."); the trigger form shows it as is. This middleware keeps the status and the
first line and adds the parameter's title and description (what the value should be), so the
form says e.g. ``Reference manifest digest (reference_digest): 'abc' does not match
'^sha256:[0-9a-f]{64}$'. Expected: sha256:<hex> of the reference manifest ...``.
Only 400 answers to ``POST .../dags/<dag_id>/dagRuns`` are touched.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TRIGGER_PATH = re.compile(r"^/api/v2/dags/(?P<dag_id>[A-Za-z0-9_.\-]+)/dagRuns/?$")
_PARAM_ERROR = re.compile(r"^Invalid input for param (?P<name>[^:\s]+): (?P<what>[^\n]*)")


def readable(detail: str, params: dict[str, Any] | None) -> str:
    """The first line of Airflow's param error, with the param's title and description."""
    match = _PARAM_ERROR.match(detail)
    if not match:
        return detail
    name, what = match["name"], match["what"].strip().rstrip(".")
    schema = ((params or {}).get(name) or {}).get("schema") or {}
    title = schema.get("title") or name
    message = f"{title} ({name}): {what}."
    description = (params or {}).get(name, {}).get("description") or schema.get("description")
    if description:
        message += f" Expected: {description}"
    return message + " Nothing was triggered."


def _dag_params(dag_id: str) -> dict[str, Any]:
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_id)
    if dag is None:
        return {}
    return {name: dag.params.get_param(name).dump() for name in dag.params}


class ReadableParamErrors:
    """ASGI middleware: see the module doc."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        match = _TRIGGER_PATH.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if not match or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        held: list[dict] = []
        passing = {"yes": True}

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                passing["yes"] = message["status"] != 400
            if passing["yes"]:
                await send(message)
            else:
                held.append(message)

        await self.app(scope, receive, capture)
        if not held:
            return
        start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
        try:
            payload = json.loads(body)
            detail = payload.get("detail")
            if isinstance(detail, str) and _PARAM_ERROR.match(detail):
                try:
                    params = _dag_params(match["dag_id"])
                except Exception:  # noqa: BLE001 - a nicer message is not worth failing the answer
                    params = {}
                payload["detail"] = readable(detail, params)
                body = json.dumps(payload).encode()
        except (ValueError, AttributeError):
            pass
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
