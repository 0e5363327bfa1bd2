"""ONNX export, verification and inference for the compensation network.

* :func:`export_onnx` turns a :class:`CompensationNet` into ONNX bytes with dynamic H and W
  (input ``"features"`` (1, C, H, W) float32, output ``"rgb"`` (1, 3, H, W)), opset 18. The
  ``torch.export`` based exporter is used, with the legacy TorchScript exporter as a fallback.
  Debug metadata is stripped so the file is just the graph and the weights. ``half=True`` stores
  the weights as float16 followed by ``Cast`` nodes back to float32 (half the size, compute stays
  float32 so every execution provider runs it).
* :func:`check_onnx` compares PyTorch and onnxruntime on a few image sizes.
* :class:`OnnxCompensator` runs the model with onnxruntime (CUDA when available, else CPU) on
  single (H, W, C) images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch

from ..errors import SundaeError

OPSET = 18
INPUT_NAME = "features"
OUTPUT_NAME = "rgb"


@contextlib.contextmanager
def _quiet_export():
    """Silence the exporter's chatter (progress lines, deprecation warnings)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export_dynamo(net, example) -> bytes:
    dim_h = torch.export.Dim("H", min=1, max=16384)
    dim_w = torch.export.Dim("W", min=1, max=16384)
    prog = torch.onnx.export(net, (example,), dynamo=True, input_names=[INPUT_NAME],
                             output_names=[OUTPUT_NAME], opset_version=OPSET, verbose=False,
                             dynamic_shapes={"x": {2: dim_h, 3: dim_w}}, optimize=True)
    return prog.model_proto.SerializeToString()


def _export_legacy(net, example) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(net, (example,), buf, dynamo=False, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], opset_version=OPSET,
                      dynamic_axes={INPUT_NAME: {2: "H", 3: "W"}, OUTPUT_NAME: {2: "H", 3: "W"}})
    return buf.getvalue()


def _strip(model) -> None:
    """Drop debug metadata (stack traces, value_info, doc strings) in place."""
    g = model.graph
    del g.value_info[:]
    g.doc_string = ""
    for node in g.node:
        node.doc_string = ""
        del node.metadata_props[:]
    del model.metadata_props[:]
    model.doc_string = ""
    model.producer_name = "sundae-compress"


def _to_half_weights(model) -> None:
    """Store float32 initialisers as float16, cast back to float32 at the top of the graph."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    casts = []
    new_inits = []
    for init in list(g.initializer):
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < 16:
            new_inits.append(init)
            continue
        arr = numpy_helper.to_array(init).astype(np.float16)
        name16 = init.name + "__fp16"
        new_inits.append(numpy_helper.from_array(arr, name16))
        casts.append(helper.make_node("Cast", [name16], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__cast"))
    del g.initializer[:]
    g.initializer.extend(new_inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)


def export_onnx(net, in_channels: Optional[int] = None, *, half: bool = False,
                method: str = "auto") -> bytes:
    """Serialise ``net`` (a :class:`CompensationNet`) to ONNX bytes with dynamic H, W.

    ``method``: ``"dynamo"`` (torch.export + onnxscript), ``"legacy"`` (TorchScript) or
    ``"auto"`` (dynamo, falling back to legacy if it fails).
    """
    import onnx

    in_channels = int(in_channels if in_channels is not None else net.in_channels)
    net = net.float().cpu()
    was_training = net.training
    net.eval()
    example = torch.zeros(1, in_channels, 2 * net.multiple, 3 * net.multiple)
    try:
        with _quiet_export(), torch.no_grad():
            if method == "legacy":
                raw = _export_legacy(net, example)
            elif method == "dynamo":
                raw = _export_dynamo(net, example)
            elif method == "auto":
                try:
                    raw = _export_dynamo(net, example)
                except Exception:  # pragma: no cover - exporter-version dependent
                    raw = _export_legacy(net, example)
            else:
                raise ValueError(f"unknown ONNX export method {method!r}")
    finally:
        net.train(was_training)
    model = onnx.load_from_string(raw)
    _strip(model)
    if half:
        _to_half_weights(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_num_params(onnx_bytes: bytes) -> int:
    """Number of weight values stored in the model's initialisers."""
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    return int(sum(int(np.prod(i.dims)) for i in m.graph.initializer))


def _default_providers() -> List[str]:
    import onnxruntime as ort

    avail = ort.get_available_providers()
    providers = []
    if "CUDAExecutionProvider" in avail and torch.cuda.is_available():
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


class OnnxCompensator:
    """Runs an exported compensation network with onnxruntime.

    ``comp(image)`` takes one (H, W, C) image (numpy or torch) and returns the (H, W, 3) RGB in the
    same kind (a torch input gives a torch output on the input's device).
    """

    def __init__(self, onnx_bytes: bytes, providers: Optional[Sequence[str]] = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(bytes(onnx_bytes), sess_options=opts,
                                                providers=list(providers or _default_providers()))
        except Exception as exc:  # corrupt model
            raise SundaeError(f"compensation network cannot be loaded by onnxruntime: {exc}") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        shape = inp.shape
        self.in_channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None

    @property
    def providers(self) -> List[str]:
        return self.session.get_providers()

    def run_nchw(self, x: np.ndarray) -> np.ndarray:
        """(1, C, H, W) float32 -> (1, 3, H, W) float32."""
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def __call__(self, image):
        is_torch = isinstance(image, torch.Tensor)
        arr = image.detach().float().cpu().numpy() if is_torch else np.asarray(image, np.float32)
        if arr.ndim != 3:
            raise ValueError(f"expected an (H, W, C) image, got shape {arr.shape}")
        if self.in_channels is not None and arr.shape[2] != self.in_channels:
            raise SundaeError(f"compensation network expects {self.in_channels} channels, "
                              f"got {arr.shape[2]}")
        out = self.run_nchw(arr.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
        out = np.ascontiguousarray(out)
        if is_torch:
            return torch.from_numpy(out).to(image.device)
        return out


def check_onnx(net, onnx_bytes: bytes, sizes: Iterable = ((48, 64), (75, 100)), atol: float = 1e-4,
               seed: int = 0) -> float:
    """Max abs difference between PyTorch and onnxruntime outputs over ``sizes`` ((H, W) pairs).

    Raises :class:`SundaeError` if it exceeds ``atol``; returns the largest difference.
    """
    comp = OnnxCompensator(onnx_bytes, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    net = net.float().cpu()
    was_training = net.training
    net.eval()
    try:
        for h, w in sizes:
            x = torch.rand(1, net.in_channels, int(h), int(w), generator=gen)
            with torch.no_grad():
                ref = net(x).numpy()
            got = comp.run_nchw(x.numpy())
            if got.shape != ref.shape:
                raise SundaeError(f"ONNX output shape {got.shape} differs from PyTorch {ref.shape}")
            worst = max(worst, float(np.abs(got - ref).max()))
    finally:
        net.train(was_training)
    if not worst <= atol:
        raise SundaeError(f"ONNX and PyTorch outputs differ by {worst:.3g} (> {atol:g})")
    return worst
