"""Neural compensation: fine-tuning after pruning, the optional U-Net and its ONNX form.

* :func:`finetune` -> :class:`FinetuneResult` (:mod:`.train`, which wires the parts together):
  :mod:`.config` (:class:`FinetuneConfig`, :class:`Hooks`), :mod:`.tensors` (:class:`TorchGaussians`),
  :mod:`.views` (training targets from a camera distribution), :mod:`.loop` (the optimisation),
  :mod:`.polish` (net-only polish on the decoded scene), :mod:`.schedule` (continuous pruning).
* :func:`make_postprocess`, :func:`postprocess_from_bundle` (:mod:`.infer`): the net at render time.
* :class:`CompensationNet` (:mod:`.unet`), :func:`export_onnx`, :class:`OnnxCompensator` (:mod:`.onnx_io`).

The trainer loads lazily (it pulls in the renderer), so inference loads on its own.
"""

from .config import FinetuneConfig, Hooks
from .infer import make_postprocess, postprocess_from_bundle
from .onnx_io import OnnxCompensator, check_onnx, export_onnx
from .schedule import PruneSchedule
from .unet import CompensationNet


def __getattr__(name):
    if name in ("finetune", "FinetuneResult"):
        from . import train

        return getattr(train, name)
    raise AttributeError(name)


__all__ = ["CompensationNet", "FinetuneConfig", "Hooks", "postprocess_from_bundle", "export_onnx", "check_onnx",
           "OnnxCompensator", "PruneSchedule", "finetune", "FinetuneResult", "make_postprocess"]
