"""Anonymization operators: one shard (mapped over shards with ``.expand``) and the merge.

Thin shells over ``secure_data.anonymize``: they render options, build an
``AnonymizeConfig``, compute the run layout and return JSON-able XCom values
(paths, digests, counts; never pixels or secrets). Heavy imports happen in ``execute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from secure_data.operators.base import StageOperator, as_list, as_mapping, is_template

if TYPE_CHECKING:
    from airflow.sdk import Context

    from secure_data.anonymize.config import AnonymizeConfig

# Options that may be given as operator arguments (each templated) and override ``config``.
OPTION_FIELDS: tuple[str, ...] = (
    "model_path", "model_sha256", "face_model_path", "face_model_sha256", "classes", "mode", "shape",
    "box_padding", "confidence", "verify_confidence", "imgsz", "device", "batch_size", "residual_policy",
)


class _AnonymizeBase(StageOperator):
    template_fields: Sequence[str] = (*StageOperator.template_fields, "upstream", "config", *OPTION_FIELDS)
    template_fields_renderers = {"config": "json"}
    ui_color = "#fce8e6"
    # The options are checked when the DAG file is parsed when none is a template (the policy-enforcing
    # subclasses take theirs from the worker's deployment policy at execute time instead).
    check_options_at_parse: ClassVar[bool] = True

    def __init__(
        self,
        *,
        upstream: Any,
        config: Mapping[str, Any] | str | None = None,
        output_root: str | None = None,
        model_path: str | None = None,
        model_sha256: str | None = None,
        face_model_path: str | None = None,
        face_model_sha256: str | None = None,
        classes: Sequence[str] | str | None = None,
        mode: str | None = None,
        shape: str | None = None,
        box_padding: float | str | None = None,
        confidence: float | str | None = None,
        verify_confidence: float | str | None = None,
        imgsz: int | str | None = None,
        device: str | None = None,
        batch_size: int | str | None = None,
        residual_policy: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(output_root=output_root, **kwargs)
        self.upstream = upstream
        self.config = config
        self.model_path = model_path
        self.model_sha256 = model_sha256
        self.face_model_path = face_model_path
        self.face_model_sha256 = face_model_sha256
        self.classes = classes
        self.mode = mode
        self.shape = shape
        self.box_padding = box_padding
        self.confidence = confidence
        self.verify_confidence = verify_confidence
        self.imgsz = imgsz
        self.device = device
        self.batch_size = batch_size
        self.residual_policy = residual_policy
        given = [config, *(getattr(self, n) for n in OPTION_FIELDS)]
        if self.check_options_at_parse and not any(is_template(v) for v in given):
            self._config()  # a missing model or a bad option fails here, not after integrity and poisoning ran

    def _config(self) -> AnonymizeConfig:
        from secure_data.anonymize.config import config_from_options

        options = as_mapping(self.config, "config")
        options.update({n: getattr(self, n) for n in OPTION_FIELDS if getattr(self, n) not in (None, "")})
        return config_from_options(options)


class AnonymizeOperator(_AnonymizeBase):
    """Anonymize shard ``shard_index`` of ``shard_count`` of the upstream stage's accepted images.

    Map it over shards: ``AnonymizeOperator.partial(task_id=..., upstream=..., config=...)
    .expand_kwargs([{"shard_index": i, "shard_count": n}, ...])``. A retried try resumes: images
    whose output and audit line are complete are skipped, the rest recomputed byte-identically.

    :param upstream: the upstream stage's ``StageResult`` XCom (templated).
    :param config: ``AnonymizeConfig`` fields as a dict (templated); aliases ``box_padding``,
        ``confidence``, ``verify_confidence``; ``model_path``/``model_sha256`` (required, the SHA-256
        pin of the model file), ``face_model_path``/``face_model_sha256`` (CenterFace, optional).
    :param model_path, model_sha256, face_model_path, face_model_sha256, classes, mode, shape,
        box_padding, confidence, verify_confidence, imgsz, device, batch_size, residual_policy:
        the same options as arguments (templated); they override ``config``.
    :param shard_index, shard_count: which shard (templated).
    :param output_root: root of run-scoped folders (default ``SECURE_DATA_OUTPUT_ROOT``).

    Returns the shard result dict (audit path and digest, counts, residual figures, throughput).
    """

    template_fields: Sequence[str] = (*_AnonymizeBase.template_fields, "shard_index", "shard_count")

    def __init__(
        self,
        *,
        shard_index: int | str = 0,
        shard_count: int | str = 1,
        upstream: Any,
        config: Mapping[str, Any] | str | None = None,
        output_root: str | None = None,
        model_path: str | None = None,
        model_sha256: str | None = None,
        face_model_path: str | None = None,
        face_model_sha256: str | None = None,
        classes: Sequence[str] | str | None = None,
        mode: str | None = None,
        shape: str | None = None,
        box_padding: float | str | None = None,
        confidence: float | str | None = None,
        verify_confidence: float | str | None = None,
        imgsz: int | str | None = None,
        device: str | None = None,
        batch_size: int | str | None = None,
        residual_policy: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            upstream=upstream, config=config, output_root=output_root, model_path=model_path,
            model_sha256=model_sha256, face_model_path=face_model_path, face_model_sha256=face_model_sha256,
            classes=classes, mode=mode, shape=shape, box_padding=box_padding, confidence=confidence,
            verify_confidence=verify_confidence, imgsz=imgsz, device=device, batch_size=batch_size,
            residual_policy=residual_policy, **kwargs)
        self.shard_index = shard_index
        self.shard_count = shard_count

    def execute(self, context: Context) -> dict[str, Any]:
        from secure_data.anonymize.shard import ResidualDetectionError, run_anonymize_shard

        config = self._config()
        upstream = self.upstream_result(self.upstream)
        index, count = int(self.shard_index), int(self.shard_count)
        self.log.info("Anonymizing shard %s/%s of %s (models %s, classes %s, mode %s, device %s)", index, count,
                      upstream.manifest_path, [d.name for d in config.detectors + config.verifiers],
                      list(config.classes), config.mode, config.device)
        try:
            result = run_anonymize_shard(upstream, self.layout(context), config=config, shard_index=index,
                                         shard_count=count)
        except ResidualDetectionError as exc:  # residual_policy "fail": the same images will fail again
            self.fail(str(exc), exc)
        c = result["counts"]
        self.log.info("Shard %s/%s: %s images (%s resumed), %s anonymized, %s quarantined, %s boxes, residual "
                      "after first pass %s, after last pass %s, %s images/s on %s", index, count, c["images"],
                      result["resumed"], c["anonymized"], c["quarantined"], c["boxes"], c["residual_first_pass"],
                      c["residual_detections"], result["images_per_s"], result["device"])
        return self.lineage_result(result)


class AnonymizeMergeOperator(_AnonymizeBase):
    """Merge the shards into the stage manifest, the merged ``audit.jsonl`` and a complete YOLO dataset.

    :param upstream: the same upstream ``StageResult`` the shards got (templated).
    :param shard_results: the mapped shard task's XComs (``anonymize.output``; templated).
    :param config: the same options the shards got (its model pins are checked against theirs).

    Returns ``StageResult.to_xcom()`` (stage ``anonymize``; ``data_root`` is the anonymized dataset;
    ``extra``: audit path/digest, residual figures, boxes per class).
    """

    template_fields: Sequence[str] = (*_AnonymizeBase.template_fields, "shard_results")

    def __init__(
        self,
        *,
        shard_results: Any,
        upstream: Any,
        config: Mapping[str, Any] | str | None = None,
        output_root: str | None = None,
        model_path: str | None = None,
        model_sha256: str | None = None,
        face_model_path: str | None = None,
        face_model_sha256: str | None = None,
        classes: Sequence[str] | str | None = None,
        mode: str | None = None,
        shape: str | None = None,
        box_padding: float | str | None = None,
        confidence: float | str | None = None,
        verify_confidence: float | str | None = None,
        imgsz: int | str | None = None,
        device: str | None = None,
        batch_size: int | str | None = None,
        residual_policy: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            upstream=upstream, config=config, output_root=output_root, model_path=model_path,
            model_sha256=model_sha256, face_model_path=face_model_path, face_model_sha256=face_model_sha256,
            classes=classes, mode=mode, shape=shape, box_padding=box_padding, confidence=confidence,
            verify_confidence=verify_confidence, imgsz=imgsz, device=device, batch_size=batch_size,
            residual_policy=residual_policy, **kwargs)
        self.shard_results = shard_results

    def run_stage(self, context: Context, layout: Any) -> Any:
        from secure_data.anonymize.merge import merge_anonymize

        shard_results = [as_mapping(r, "shard result") for r in as_list(self.shard_results, "shard_results")]
        return merge_anonymize(self.upstream_result(self.upstream), layout, shard_results, self._config())

    def describe(self, result: Any) -> None:
        f = result.figures
        self.log.info("Anonymize merged %s shard(s): %s images anonymized, %s quarantined, %s boxes %s; residual "
                      "after first pass %s, after last pass %s; %s images/s; manifest %s (%s)", f.shards,
                      f.anonymized, f.quarantined, f.boxes, dict(f.boxes_per_class), f.residual_first_pass,
                      f.residual_detections, f.images_per_second, result.manifest_path, result.manifest_digest)
