"""Neural compensation: the U-Net, its ONNX export/inference, fine-tuning and continuous pruning.

* :class:`CompensationNet` - small U-Net, identity at initialisation (:mod:`.unet`).
* :func:`export_onnx`, :func:`check_onnx`, :class:`OnnxCompensator` (:mod:`.onnx_io`).
* :func:`finetune` -> :class:`FinetuneResult`, :func:`make_postprocess` (:mod:`.train`).
* :class:`PruneSchedule` - ``"every=N,share=S"`` continuous pruning (:mod:`.schedule`).

The training module imports the renderer lazily, so the net and ONNX parts load on their own.
"""

from .onnx_io import OnnxCompensator, check_onnx, export_onnx
from .schedule import PruneSchedule
from .unet import CompensationNet


def postprocess_from_bundle(bundle):
    """The final-RGB mapping stored in a bundle: its ONNX net (run by onnxruntime) on the splatted
    colour + feature channels, or None when the bundle has no net. The net bytes were checksummed
    by :func:`sundae_compress.io.bundle.read_bundle` before they reach onnxruntime."""
    if bundle.net is None:
        return None
    from .train import make_postprocess

    meta = bundle.net_meta or {}
    return make_postprocess(OnnxCompensator(bundle.net), int(meta.get("num_features", 0)))


def __getattr__(name):
    if name in ("finetune", "FinetuneResult", "make_postprocess"):
        from . import train

        return getattr(train, name)
    raise AttributeError(name)


__all__ = ["CompensationNet", "postprocess_from_bundle", "export_onnx", "check_onnx", "OnnxCompensator", "PruneSchedule",
           "finetune", "FinetuneResult", "make_postprocess"]
