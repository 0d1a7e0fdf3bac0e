"""How the plugin serves a run's report folder: which requests it accepts, the headers of every
response, and the readable pages shown where there is no report (yet). Plain Python (no Airflow):
plugin.py wires it into the API server.

A report folder holds supplier-influenced text (file names, class names) and GX pages. Every
response therefore carries a Content-Security-Policy that runs no script at all (``sandbox``
without ``allow-scripts``: the page also gets an opaque origin, so markup that slipped through
could neither script nor act with the reader's Airflow session), loads nothing from elsewhere,
and may be framed only by the Airflow UI itself (the run's report tab).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

# No script, nothing remote; inline styles and data: thumbnails only; framed only by Airflow's own UI.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox"
)
# The pages below are ours (escaped text only). Not sandboxed: a sandbox would block their meta refresh.
STATE_PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
                  "frame-ancestors 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# No Cross-Origin-Resource-Policy: the sandboxed pages have an opaque origin, and "same-origin" would
# refuse them their own images and fonts.
# What a report folder contains; anything else is not served (no guessing of content types).
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8", ".json": "application/json", ".css": "text/css; charset=utf-8",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".ico": "image/x-icon", ".otf": "font/otf",
}
REFRESH_SECONDS = 10

# Airflow's own alphabet for DAG ids (airflow.utils.helpers.KEY_REGEX), never "." or "..".
_DAG_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(ValueError):
    """A dag_id, run_id or path the report app refuses (answered 404, with the reason)."""


def check_dag_id(dag_id: str) -> str:
    if not _DAG_ID.fullmatch(dag_id) or dag_id in (".", ".."):
        raise BadRequest(f"not a DAG id: {dag_id!r}")
    return dag_id


def check_run_id(run_id: str) -> str:
    """Run ids are free text in Airflow; here they become a folder name: no separators, dots-only or control."""
    if (not run_id or len(run_id) > 250 or "/" in run_id or "\\" in run_id or _CONTROL.search(run_id)
            or set(run_id) == {"."}):
        raise BadRequest(f"not a run id: {run_id!r}")
    return run_id


def report_file(base: Path, relpath: str) -> Path | None:
    """The file ``relpath`` under the report folder ``base``; ``None`` if it is not there.

    Refuses (BadRequest) anything that leaves ``base`` once resolved (``..``, links) or is not a
    report media type.
    """
    root = base.resolve()
    target = (root / (relpath or "index.html")).resolve()
    if not target.is_relative_to(root):
        raise BadRequest("path leaves the report folder")
    if target.is_dir():
        target = target / "index.html"
    if target.suffix.lower() not in MEDIA_TYPES:
        raise BadRequest(f"not a report file type: {target.suffix!r}")
    return target if target.is_file() else None


@dataclass(frozen=True)
class StatePage:
    """A readable page where a report is not (yet) there."""

    status: int
    title: str
    message: str
    refresh: bool = False

    def html(self, dag_id: str, run_id: str) -> str:
        refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if self.refresh else ""
        note = (f'<p class="sub">This page checks again every {REFRESH_SECONDS} seconds and shows the report '
                "as soon as it is written.</p>") if self.refresh else ""
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}<title>{html.escape(self.title)}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 24px; color: #1d2430; background: #fafbfc; }}
h1 {{ font-size: 20px; }} .sub {{ color: #5b6675; font-size: 13px; }} code {{ font-size: 12px; }}</style></head>
<body><h1 id="state-title">{html.escape(self.title)}</h1>
<div class="sub">DAG <code>{html.escape(dag_id)}</code> &middot; run <code>{html.escape(run_id)}</code></div>
<p id="state-message">{html.escape(self.message)}</p>{note}</body></html>
"""


def state_page(*, dag_exists: bool, writes_report: bool, run_state: str | None) -> StatePage:
    """What to tell a reader who opens a run's report tab where no report file exists."""
    if not dag_exists:
        return StatePage(404, "No such DAG", "This DAG is not known to Airflow.")
    if not writes_report:
        return StatePage(200, "No sanitization report for this DAG",
                         "This DAG has no report task, so its runs have no sanitization report. Reports belong "
                         "to runs of the sanitization DAG (secure_pretraining_sanitization); open the run that "
                         "produced the package from its Asset event.")
    if run_state is None:
        return StatePage(404, "No such run", "This DAG has no run with this id.")
    if run_state in ("queued", "running"):
        return StatePage(200, "Report not written yet",
                         f"The run is {run_state}. Its report is written by the report task when the stages "
                         "have finished (also when one of them failed).", refresh=True)
    return StatePage(404, "This run has no report",
                     f"The run ended {run_state} without writing a report (its report task did not run, or "
                     "the report was written under another output root).")
