"""Inference: turn a render of the compressed scene into the final RGB (the compensation net).

Used by rendering and evaluation (``api.load_for_render``) without importing the trainer."""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import SundaeError


def net_input(rgb: torch.Tensor, feats) -> torch.Tensor:
    """(H, W, 3) rgb [+ (H, W, K) features] -> (1, 3 + K, H, W)."""
    x = rgb if feats is None else torch.cat([rgb, feats], -1)
    return x.permute(2, 0, 1).unsqueeze(0)


def make_postprocess(net, num_features: int = 0, clamp: bool = True) -> Callable:
    """Build ``post(render_output) -> (H, W, 3)`` applying the compensation net.

    ``net`` is a :class:`~.unet.CompensationNet`, an :class:`~.onnx_io.OnnxCompensator` or None
    (identity). The net input is ``concat(output.rgb, output.features[..., :num_features])``.
    """
    k = int(num_features)

    def post(out) -> torch.Tensor:
        rgb = out.rgb
        if net is None:
            y = rgb
        else:
            if k > 0:
                if out.features is None or out.features.shape[-1] < k:
                    raise SundaeError(f"the compensation net needs {k} rendered feature channels")
                x = torch.cat([rgb, out.features[..., :k]], -1)
            else:
                x = rgb
            if isinstance(net, torch.nn.Module):
                dev = next(net.parameters()).device
                with torch.no_grad():
                    y = net.apply_image(x.detach().to(dev).float()).to(rgb.device)
            else:
                y = net(x.detach())
        return y.clamp(0.0, 1.0) if clamp else y

    return post


def postprocess_from_bundle(bundle):
    """The final-RGB mapping stored in a bundle: its ONNX net (run by onnxruntime) on the splatted
    colour + feature channels, or None when the bundle has no net. The net bytes were checksummed
    by :func:`sundae_compress.io.bundle.read_bundle` before they reach onnxruntime."""
    if bundle.net is None:
        return None
    from .onnx_io import OnnxCompensator

    meta = bundle.net_meta or {}
    return make_postprocess(OnnxCompensator(bundle.net), int(meta.get("num_features", 0)))
