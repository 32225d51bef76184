"""Built-in decoders: code vector ``[B, in_features]`` -> image ``[B, C, H, W]``.

The engine normalizes images with mean 0.5 and std 0.5, i.e. to ``[-1, 1]``; a decoder's
output is compared with those, so ``output="tanh"`` (default) produces exactly that range and
``output="linear"`` leaves it unbounded.

Registered names (engine-supplied arguments marked *):

- ``conv``: ``ConvDecoder(in_features*, out_channels*, image_size*, width=64, norm="batch",
  output="tanh", max_channels=512)``. ``in_features`` is the size of the concatenated code
  ``[f_e, f_p, z_id]``; ``out_channels`` and ``image_size`` are the image's.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from facedapt import hookimpl

__all__ = ["ConvDecoder", "facedapt_register_decoders"]


def _plan(image_size: int, min_side: int = 4) -> tuple[int, int]:
    """(start side, number of 2x upsamplings) for ``image_size``: halve while even and >= 2*min_side."""
    side, steps = image_size, 0
    while side % 2 == 0 and side // 2 >= min_side:
        side //= 2
        steps += 1
    return side, steps


class ConvDecoder(nn.Module):
    """Linear to a ``start x start`` map, then (transposed conv 4x4/2 - BN - ReLU) blocks.

    64 px: 4 -> 8 -> 16 -> 32 -> 64; 112 px: 7 -> 14 -> 28 -> 56 -> 112. Channels halve at
    each block, ending at ``width``; a 3x3 conv maps to ``out_channels``.
    """

    def __init__(self, in_features: int, out_channels: int = 3, image_size: int = 64, width: int = 16,
                 norm: Literal["batch", "none"] = "batch", output: Literal["tanh", "linear"] = "tanh",
                 max_channels: int = 256) -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        if output not in ("tanh", "linear"):
            raise ValueError(f"output must be 'tanh' or 'linear', got {output!r}")
        start, steps = _plan(image_size)
        chans = [min(width * 2 ** (steps - i), max_channels) for i in range(steps + 1)]
        bn = norm == "batch"
        self.start = start
        self.project = nn.Sequential(
            nn.Linear(in_features, chans[0] * start * start, bias=not bn),
            nn.Unflatten(1, (chans[0], start, start)),
            nn.BatchNorm2d(chans[0]) if bn else nn.Identity(),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            blocks += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=not bn),
                       nn.BatchNorm2d(cout) if bn else nn.Identity(), nn.ReLU(inplace=True)]
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(chans[-1], out_channels, 3, padding=1)
        self.output = output
        self.in_features = in_features
        self.out_channels = out_channels
        self.image_size = image_size

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.to_image(self.blocks(self.project(code)))
        return torch.tanh(x) if self.output == "tanh" else x


@hookimpl
def facedapt_register_decoders(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("conv", ConvDecoder)
