"""Inference on ONNX Runtime: a ferlab model exported once to ONNX (cached on disk, keyed by the
weights file's bytes), optionally quantised to int8, run by an `OnnxClassifier` that takes the same
standardised float inputs as the PyTorch model and returns its logits.

PyTorch stays for training and for models the exporter cannot take (`export_onnx` raises
`OnnxUnavailable` then and callers keep the PyTorch model).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data.cache import atomic_write_bytes, cache_dir
from .checkpoint import file_fingerprint
from .profiling import example_inputs


class OnnxUnavailable(ValueError):
    """ONNX Runtime missing, or a model the exporter cannot take."""


def export_onnx(model: torch.nn.Module, meta: dict, path: os.PathLike) -> Path:
    """Write `model` (float32, eval) as ONNX with a dynamic batch axis; inputs `image` (+ `landmarks`)."""
    import io
    pre = meta["preprocess"]
    model = model.float().eval()
    args = example_inputs(model, (1, pre["channels"], pre["img_size"], pre["img_size"]))
    names = ["image", "landmarks"][:len(args)]  # landmarks: (batch, 68, 2) in input pixels
    buf = io.BytesIO()
    import warnings
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice: it exports these models
            warnings.simplefilter("ignore", DeprecationWarning)
            # and the tracer's notes on shapes read as numbers: a model's input size is fixed by its description
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, args, buf, input_names=names, output_names=["logits"],
                              dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}},
                              dynamo=False, opset_version=17)
    except Exception as e:  # noqa: BLE001 - any exporter failure means: this model stays on PyTorch
        raise OnnxUnavailable(f"{meta.get('arch', type(model).__name__)}: ONNX export failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def quantize_onnx_int8(src: os.PathLike, dst: os.PathLike, calibration: np.ndarray | None = None) -> Path:
    """int8 weights and activations: static quantisation (QDQ, per-channel) calibrated on
    `calibration` (standardised images, (N, C, S, S) float32), or dynamic (weights only) without it."""
    from onnxruntime import quantization as q
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    if calibration is None:
        q.quantize_dynamic(str(src), str(tmp), weight_type=q.QuantType.QInt8)
    else:
        class Reader(q.CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"image": calibration[i:i + 32]} for i in range(0, len(calibration), 32)])

            def get_next(self):
                return next(self.it, None)
        pre = tmp.with_name(tmp.name + ".pre.onnx")
        q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        q.quantize_static(str(pre), str(tmp), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
        pre.unlink(missing_ok=True)
    os.replace(tmp, dst)
    return dst


def cached_onnx(model: torch.nn.Module, meta: dict, weights_path: os.PathLike) -> Path:
    """The ONNX file of a model file, exported on first use into the cache (FERLAB_CACHE/onnx)."""
    try:
        path = cache_dir() / "onnx" / f"{Path(weights_path).stem}-{file_fingerprint(weights_path)}.onnx"
        if not path.is_file():
            export_onnx(model, meta, path)
    except OSError as e:  # an unwritable cache: the model stays on PyTorch rather than failing
        raise OnnxUnavailable(f"the ONNX cache cannot be written ({e}; set FERLAB_CACHE)") from None
    return path


class OnnxClassifier:
    """An ONNX Runtime session over a ferlab model's ONNX file; `threads` intra-op threads (one
    inter-op thread: a model this small gains nothing from more, and a busy machine loses)."""

    def __init__(self, path: os.PathLike, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxUnavailable("onnxruntime is not installed (pip install onnxruntime)") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, x: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        feed = {"image": np.ascontiguousarray(x, np.float32)}
        if "landmarks" in self.inputs:
            feed["landmarks"] = np.ascontiguousarray(landmarks, np.float32)
        return self.session.run(["logits"], feed)[0]
