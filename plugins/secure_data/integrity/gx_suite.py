"""The Great Expectations (1.x) gate over the dataset's metadata tables, built in code.

Three small tables, one expectation suite each:

* ``images``: one row per image file (all of them; row-level expectations only look
  at the rows still in the running, ``candidate == True``);
* ``splits``: one row per split, with the number of candidate images;
* ``classes``: one row per class of ``data.yaml``, with the number of boxes in candidate labels.

Every table has a ``key`` column (image path, split name, class name) that GX
reports for the rows that fail, which is how a row-level failure becomes a
quarantine of exactly those samples. The suite runs in a fresh ephemeral context
per call (creating one takes milliseconds; the ~3 s is the import, paid once per
process) whose only Data Docs site is the run's ``report/gx`` folder.

GX decides nothing here: it reports, and the caller applies fail / warn / quarantine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_data.integrity import codes
from secure_data.integrity.codes import FileFinding
from secure_data.integrity.config import IntegrityConfig

SITE_NAME = "secure_data_integrity"
IMAGE_COLUMNS = ("key", "split", "sample", "sha256", "format", "width", "height", "channels", "bit_depth", "size",
                 "candidate", "image_ok", "label_ok", "n_boxes")
# GX contexts and Data Docs builders are not documented as thread-safe: one run at a time per process.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class GxOutcome:
    success: bool
    expectations: tuple[Mapping[str, Any], ...]  # deterministic summary for the manifest header
    row_findings: Mapping[str, tuple[FileFinding, ...]]  # image path -> findings (gx_policy)
    dataset_findings: tuple[FileFinding, ...]  # table-level failures (gx_dataset_policy)
    docs_index: Path | None


def _plain(value: Any) -> Any:
    """numpy scalars and friends -> JSON-native values (the summary goes into the manifest header)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "item"):
        return _plain(value.item())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _ephemeral_context(docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    from secure_data.report import gx_view

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,  # no phoning home from a security pipeline
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            SITE_NAME: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                # Self-contained pages that run no script (a file name is supplier data): report/gx_view.py.
                "site_section_builders": gx_view.SITE_SECTION_BUILDERS,
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": gx_view.SITE_INDEX_VIEW},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _suites(config: IntegrityConfig) -> dict[str, list[Any]]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    candidate = Column("candidate") == True  # noqa: E712 - builds a GX condition, not a Python comparison

    def meta(code: str) -> dict[str, str]:
        return {"code": code}

    images = [
        gxe.ExpectColumnValuesToBeUnique(column="sha256", row_condition=candidate, meta=meta(codes.GX_DUPLICATE_HASH)),
        gxe.ExpectColumnValuesToBeInSet(column="format", value_set=list(config.allowed_formats),
                                        row_condition=candidate, meta=meta(codes.GX_FORMAT_NOT_ALLOWED)),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=config.min_width, max_value=config.max_width,
                                          row_condition=candidate, meta=meta(codes.GX_WIDTH_OUT_OF_BOUNDS)),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=config.min_height, max_value=config.max_height,
                                          row_condition=candidate, meta=meta(codes.GX_HEIGHT_OUT_OF_BOUNDS)),
        gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=list(config.allowed_channels),
                                        row_condition=candidate, meta=meta(codes.GX_CHANNELS_NOT_ALLOWED)),
        gxe.ExpectColumnValuesToBeInSet(column="bit_depth", value_set=list(config.allowed_bit_depths),
                                        row_condition=candidate, meta=meta(codes.GX_BIT_DEPTH_NOT_ALLOWED)),
        gxe.ExpectColumnMeanToBeBetween(column="image_ok", min_value=config.min_image_valid_rate, max_value=1.0,
                                        meta=meta(codes.GX_IMAGE_VALID_RATE)),
        gxe.ExpectColumnMeanToBeBetween(column="label_ok", min_value=config.min_label_valid_rate, max_value=1.0,
                                        meta=meta(codes.GX_LABEL_VALID_RATE)),
    ]
    splits = [
        gxe.ExpectColumnValuesToBeBetween(column="n_images", min_value=config.min_images_per_split,
                                          max_value=config.max_images_per_split, meta=meta(codes.GX_SPLIT_SIZE)),
    ]
    if config.required_splits:
        splits.append(gxe.ExpectColumnDistinctValuesToContainSet(
            column="key", value_set=list(config.required_splits), meta=meta(codes.GX_REQUIRED_SPLITS)))
    classes = [
        gxe.ExpectColumnValuesToBeBetween(column="n_boxes", min_value=config.min_boxes_per_class,
                                          max_value=config.max_boxes_per_class, meta=meta(codes.GX_CLASS_COUNT)),
    ]
    return {"images": images, "splits": splits, "classes": classes}


def _frames(images: Sequence[Mapping[str, Any]], splits: Sequence[Mapping[str, Any]],
            classes: Sequence[Mapping[str, Any]]):
    import pandas as pd

    return {
        "images": pd.DataFrame(list(images), columns=list(IMAGE_COLUMNS)),
        "splits": pd.DataFrame(list(splits), columns=["key", "n_images"]),
        "classes": pd.DataFrame(list(classes), columns=["key", "class_id", "n_boxes"]),
    }


def run_suite(
    images: Sequence[Mapping[str, Any]],
    splits: Sequence[Mapping[str, Any]],
    classes: Sequence[Mapping[str, Any]],
    *,
    config: IntegrityConfig,
    docs_dir: Path,
) -> GxOutcome:
    """Validate the three tables; render Data Docs into ``docs_dir``; return what failed, by code."""
    with _LOCK:
        return _run_suite(images, splits, classes, config=config, docs_dir=docs_dir)


def _run_suite(images, splits, classes, *, config: IntegrityConfig, docs_dir: Path) -> GxOutcome:
    # GX logs its own plumbing at INFO (hundreds of lines per run): keep task logs readable.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    docs_dir.mkdir(parents=True, exist_ok=True)
    context = _ephemeral_context(docs_dir)
    source = context.data_sources.add_pandas("secure_data_integrity")
    frames = _frames(images, splits, classes)
    summary: list[dict[str, Any]] = []
    row_findings: dict[str, list[FileFinding]] = {}
    dataset_findings: list[FileFinding] = []
    success = True
    for table, expectations in _suites(config).items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"integrity_{table}", expectations=expectations))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"integrity_{table}", data=batch, suite=suite))
        result = validation.run(
            batch_parameters={"dataframe": frames[table]},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["key"]},
        )
        success = success and bool(result.success)
        for r in result.results:
            cfg = r.expectation_config
            code = (cfg.meta or {}).get("code", "gx_" + cfg.type)
            res = r.result or {}
            raised = bool(r.exception_info and r.exception_info.get("raised_exception"))
            entry = {
                "table": table,
                "code": code,
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(r.success),
                "unexpected_count": _plain(res.get("unexpected_count")),
                "observed_value": _plain(res.get("observed_value")),
                "error": raised,
            }
            summary.append(entry)
            if r.success:
                continue
            keys = sorted({str(row["key"]) for row in res.get("unexpected_index_list") or []})
            if table == "images" and code in codes.GX_ROW_CODES and keys:
                for path in keys:
                    row_findings.setdefault(path, []).append(FileFinding(code, _row_detail(cfg.type, cfg.kwargs)))
            else:
                dataset_findings.append(FileFinding(code, _dataset_detail(table, cfg.type, cfg.kwargs, res, keys,
                                                                      raised)))
    context.build_data_docs(site_names=[SITE_NAME])
    index = docs_dir / "index.html"
    return GxOutcome(
        success=success,
        expectations=tuple(summary),
        row_findings={k: tuple(v) for k, v in row_findings.items()},
        dataset_findings=tuple(dataset_findings),
        docs_index=index if index.exists() else None,
    )


def _bounds(kwargs: Mapping[str, Any]) -> str:
    if "value_set" in kwargs:
        return f"in {list(kwargs['value_set'])}"
    return f"between {kwargs.get('min_value')} and {kwargs.get('max_value')}"


def _row_detail(expectation: str, kwargs: Mapping[str, Any]) -> str:
    if expectation == "expect_column_values_to_be_unique":
        return f"GX {expectation}: another candidate image has the same {kwargs.get('column')}"
    return f"GX {expectation}: {kwargs.get('column')} not {_bounds(kwargs)}"


def _dataset_detail(table: str, expectation: str, kwargs: Mapping[str, Any], res: Mapping[str, Any],
                    keys: list[str], raised: bool) -> str:
    what = f"GX {table}.{expectation} on {kwargs.get('column')}"
    if raised:
        return f"{what}: could not be evaluated"
    if keys:
        return f"{what}: {', '.join(keys[:10])} not {_bounds(kwargs)}"
    return f"{what}: observed {_plain(res.get('observed_value'))}, expected {_bounds(kwargs)}"
