"""The polish step: after the Gaussians are final (and codec-decoded, exactly what the bundle will
hold), train the compensation net alone on cached renders of that fixed scene."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch

from ..progress import Progress
from .infer import net_input
from .loop import image_loss
from .tensors import TorchGaussians


def polish_net(net: torch.nn.Module, fixed: TorchGaussians, cams: Sequence, refs: Sequence[torch.Tensor],
               iterations: int, lr: float, ssim_weight: float, ssim_fn, render, render_kw: dict,
               seed: int = 0, progress: bool = False) -> None:
    """``iterations`` Adam steps of ``net`` on (render of ``fixed`` at ``cams``, ``refs``)."""
    inputs = []
    with torch.no_grad():
        for cam in cams:
            out = render(fixed.render_input(), cam, features=fixed.features, **render_kw)
            inputs.append(net_input(out.rgb, out.features))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    rng = np.random.default_rng(seed)
    order: List[int] = []
    with Progress(iterations, "net polish (decoded scene)", log_every=10, enabled=progress) as bar:
        for _ in range(int(iterations)):
            if not order:
                order = list(rng.permutation(len(cams)))
            vi = int(order.pop())
            pred = net(inputs[vi])[0].permute(1, 2, 0)
            loss = image_loss(pred, refs[vi], ssim_weight, ssim_fn)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
    net.eval()
