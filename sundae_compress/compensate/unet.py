"""The neural compensation network: a small fully convolutional U-Net.

Input: a rendered image with ``in_channels = 3 + K`` channels (rendered RGB followed by the
``K`` splatted per-Gaussian feature channels), layout (B, C, H, W). Output: RGB (B, 3, H, W).

Design (SUNDAE, section 3.3 "neural compensation"):

* ``levels`` average-pool down-samplings, channel count ``min(width * 2**i, max_width)`` at level
  ``i``; two 3x3 convolutions + LeakyReLU per level; bilinear up-sampling (x2) and skip
  connections by concatenation on the way back up.
* The output is ``input[:, :3] + residual`` where the 1x1 head producing the residual is
  zero-initialised, so an untrained network returns exactly the rendered colour.
* Any H, W: the input is edge-padded to a multiple of ``2**levels`` and the result cropped.

The default (width 16, 4 levels, max width 40) has ~0.23 M parameters (~0.9 MB as fp32 ONNX).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=False),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=False),
    )


class CompensationNet(nn.Module):
    """U-Net mapping concat(rendered rgb, rendered features) -> corrected RGB.

    Parameters
    ----------
    in_channels: 3 + number of per-Gaussian feature channels.
    width: channels at full resolution.
    levels: number of down-samplings (the input is padded to a multiple of ``2**levels``).
    max_width: cap on the channel count of the deeper levels (keeps the model small).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, levels: int = 4, max_width: int = 40):
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"in_channels must be >= 3 (RGB first), got {in_channels}")
        if levels < 1 or width < 1:
            raise ValueError("levels and width must be positive")
        self.in_channels = int(in_channels)
        self.width = int(width)
        self.levels = int(levels)
        self.max_width = int(max_width)
        ch = [min(width * 2 ** i, max_width) for i in range(levels + 1)]
        self.channels = ch
        self.enc = nn.ModuleList([_block(in_channels, ch[0])] +
                                 [_block(ch[i - 1], ch[i]) for i in range(1, levels + 1)])
        self.dec = nn.ModuleList([_block(ch[i + 1] + ch[i], ch[i]) for i in range(levels)])
        self.head = nn.Conv2d(ch[0], 3, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        return 2 ** self.levels

    def num_params(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())

    def config(self) -> dict:
        """Constructor arguments (stored next to the ONNX model in a bundle)."""
        return {"in_channels": self.in_channels, "width": self.width, "levels": self.levels,
                "max_width": self.max_width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        ph = (m - h % m) % m
        pw = (m - w % m) % m
        y = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips: List[torch.Tensor] = []
        for i, enc in enumerate(self.enc):
            if i > 0:
                y = F.avg_pool2d(y, 2)
            y = enc(y)
            skips.append(y)
        y = skips[-1]
        for i in range(self.levels - 1, -1, -1):
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            y = self.dec[i](torch.cat([y, skips[i]], dim=1))
        out = x[:, :3] + self.head(y)[:, :, :h, :w]
        return out

    def apply_image(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, C) image -> (H, W, 3); convenience for single renders."""
        return self.forward(image.permute(2, 0, 1).unsqueeze(0))[0].permute(1, 2, 0)
