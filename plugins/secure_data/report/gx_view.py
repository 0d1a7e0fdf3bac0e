"""Great Expectations Data Docs that are self-contained and cannot run script.

GX's stock pages load jQuery, Bootstrap, bootstrap-table, Vega and Font Awesome from five
public CDNs and a logo from S3, fill their tables from inline scripts, and write the values
of failing rows (our file paths: chosen by the data supplier) into table cells unescaped.
Served on the Airflow origin, a file named ``<img src=x onerror=...>.jpg`` ran script with the
reader's session.

:class:`SelfContainedPageView` is the view GX renders every Data Docs page with here
(``gx_suite`` configures it for the site's sections and index). It uses GX's own templates
and styles, read from the installed package, with

* every ``<script>`` block, inline event handler and remote stylesheet/image removed;
* the bootstrap-table tables rendered on the server as plain ``<table>`` elements;
* a small local stylesheet in place of Bootstrap, and a ``Content-Security-Policy`` meta tag
  (no script, no remote resource) for a page opened straight from disk;
* the plain-text cells of data tables (failing row keys, observed values) HTML-escaped.

The plugin also serves these pages with a ``sandbox`` CSP (plugin.py), so even markup this
misses cannot run script on the Airflow origin.
"""

from __future__ import annotations

import html
import re
from typing import Any

import jinja2
from great_expectations.render.view import DefaultJinjaPageView  # noqa: TID253 (only GX imports this module)

META_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
            "base-uri 'none'; form-action 'none'")

# What GX pages need from Bootstrap 4, without Bootstrap: layout, cards, tables, badges, alerts.
LOCAL_CSS = """
*, ::before, ::after { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px; color: #212529;
       background: #fff; line-height: 1.45; }
a { color: #0b57d0; } .d-none, .ge-walkthrough-modal, .modal, .cooltip > span, .sr-only { display: none !important; }
.container-fluid { padding: 16px 24px; } .row { display: flex; flex-wrap: wrap; gap: 16px; }
.row > .col-md-2, .row > .col-lg-2 { flex: 0 0 230px; } .row > [class*="col-md-10"] { flex: 1 1 600px; min-width: 0; }
.col-12 { width: 100%; } .navbar { display: flex; align-items: center; padding: 6px 24px; background: #f8f9fa;
       border-bottom: 1px solid #dee2e6; } .navbar img { height: 40px !important; }
.nav, .list-group { list-style: none; padding-left: 0; margin: 0; } .nav-link { display: block; padding: 3px 0; }
.breadcrumb { display: flex; gap: 6px; list-style: none; padding: 0; margin: 0 0 0 12px; }
.breadcrumb-item + .breadcrumb-item::before { content: "/"; padding-right: 6px; color: #6c757d; }
.card { border: 1px solid #dee2e6; border-radius: 6px; margin-bottom: 16px; background: #fff; }
.card-header { padding: 8px 12px; background: #f1f3f5; border-bottom: 1px solid #dee2e6; font-weight: 600; }
.card-body { padding: 12px; } .table-responsive { overflow-x: auto; }
table, .table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { border: 1px solid #dee2e6; padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: #f1f3f5; } tr.ge-row-link td:last-child { white-space: nowrap; }
.badge { display: inline-block; padding: 1px 6px; border-radius: 4px; background: #e9ecef; font-size: 12px; }
.alert { padding: 8px 12px; border-radius: 6px; margin: 8px 0; } .alert-secondary { background: #f1f3f5; }
.text-success, .ge-success-icon { color: #137333; } .text-danger, .ge-failed-icon { color: #b3261e; }
.fas::before { font-style: normal; } .fa-check-circle::before { content: "\\2714"; }
.fa-times::before, .fa-times-circle::before { content: "\\2718"; } .fa-exclamation-triangle::before { content: "!"; }
.show-scrollbars { overflow-x: auto; max-width: 100%; } .btn, .ge-walkthrough-modal button { display: none; }
"""

HEAD = f"""<meta http-equiv="Content-Security-Policy" content="{META_CSP}">
<style>{LOCAL_CSS}</style>"""

# bootstrap-table filled from a script in GX: the same data, rendered on the server.
BOOTSTRAP_TABLE = """{% include 'content_block_header.j2' %}
{% set table_columns = content_block["table_columns"] %}
{% set rows = content_block["table_data"] | render_bootstrap_table_data %}
<div class="table-responsive"><table id="{{ content_block_id }}-body-table" class="table table-sm">
<thead><tr>{% for col in table_columns %}<th>{{ col.get("title", col.get("field", "")) | e }}</th>{% endfor %}
{% if rows and rows[0].get("_table_row_link_path") %}<th>details</th>{% endif %}</tr></thead>
<tbody>{% for row in rows %}<tr class="ge-row-link">
{% for col in table_columns %}<td>{{ row.get(col.get("field"), "") }}</td>{% endfor %}
{% if row.get("_table_row_link_path") %}<td><a href="{{ row["_table_row_link_path"] | e }}">open</a></td>{% endif %}
</tr>{% endfor %}</tbody></table></div>
"""

OVERRIDES = {
    "js_script_imports.j2": HEAD,
    "bootstrap_table.j2": BOOTSTRAP_TABLE,
    "bootstrap_table_js_functions.j2": "",
    "graph.j2": "{% include 'content_block_header.j2' %}<p class=\"alert alert-secondary\">"
                "(chart not shown: these pages run no script)</p>",
    "cta_footer.j2": "",
    "cloud-footer.j2": "",
    "page_action_card.j2": "",
}

_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.I | re.S)
_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>", re.I)
_HANDLER = re.compile(r"\s on[a-z]+\s*=\s*(?:\"[^\"]*\"|'[^']*')", re.I)
_REMOTE_IMAGES_DIR = re.compile(r"\{%-?\s*set static_images_dir\s*=\s*\"https?://[^\"]*\"\s*-?%\}")
_REMOTE_URL_CSS = re.compile(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", re.I)


def _strip_remote_and_script(name: str, source: str) -> str:
    if name.endswith(".css"):
        return _REMOTE_URL_CSS.sub("none", source)
    source = _SCRIPT.sub("", source)
    source = _REMOTE_LINK.sub("", source)
    source = _HANDLER.sub("", source)
    # the logo from the site's own static/images (the index page sets no folder of its own)
    return _REMOTE_IMAGES_DIR.sub('{% if static_images_dir is not defined %}{% set static_images_dir = '
                                  '"./static/images/" %}{% endif %}', source)


class _SelfContainedLoader(jinja2.BaseLoader):
    """GX's templates and styles, as installed, minus script and remote resources; a few replaced."""

    def __init__(self, inner: jinja2.BaseLoader) -> None:
        self.inner = inner

    def get_source(self, environment: jinja2.Environment, template: str):
        if template in OVERRIDES:
            return OVERRIDES[template], None, lambda: True
        source, filename, uptodate = self.inner.get_source(environment, template)
        return _strip_remote_and_script(template, source), filename, uptodate


class SelfContainedPageView(DefaultJinjaPageView):
    """``DefaultJinjaPageView`` whose pages need no network and run no script (see the module doc)."""

    def __init__(self, custom_styles_directory: Any = None, custom_views_directory: Any = None) -> None:
        super().__init__(custom_styles_directory=custom_styles_directory,
                         custom_views_directory=custom_views_directory)
        self.env.loader = _SelfContainedLoader(self.env.loader)

    @jinja2.pass_context
    def render_content_block(self, jinja_context: Any, content_block: Any, index: Any = None,
                             content_block_id: Any = None, render_to_markdown: bool = False) -> Any:
        # A plain string in a table cell is a data value (a failing row's key, an observed value): text,
        # never markup. GX's own markup in cells comes as content blocks (dicts), which stay as they are.
        if content_block_id and "-cell-" in str(content_block_id) and not render_to_markdown:
            if isinstance(content_block, str):
                content_block = html.escape(content_block)
            elif isinstance(content_block, list):
                content_block = [html.escape(v) if isinstance(v, str) else v for v in content_block]
        return super().render_content_block(jinja_context, content_block, index, content_block_id,
                                            render_to_markdown)


class SelfContainedIndexView(SelfContainedPageView):
    """The same for the site index page (GX renders it with ``index_page.j2``)."""

    _template = "index_page.j2"


VIEW = {"module_name": __name__, "class_name": SelfContainedPageView.__name__}
SITE_SECTION_BUILDERS = {section: {"view": VIEW} for section in ("expectations", "validations", "profiling")}
SITE_INDEX_VIEW = {"module_name": __name__, "class_name": SelfContainedIndexView.__name__}
