"""Endless samplers over index sets, and gathering a batch onto the device.

A sampler's position is two integers (epoch, offset) and its order is a pure function of
(seed, epoch), so a checkpoint restores it exactly without storing permutations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import attrs
import torch
from torch import nn

from facedapt.data.samples import Samples
from facedapt.errors import UsageError
from facedapt.method import Batch


class EndlessSampler:
    """Yields index batches forever; each epoch is a fresh permutation (or, with ``weights``,
    a weighted draw with replacement of the same size: the balanced sampler).

    ``batch_size`` is the global batch; with ``world_size`` > 1 every rank draws the same global
    batch and :meth:`next` returns its contiguous slice ``[rank*B/W, (rank+1)*B/W)``.
    """

    def __init__(self, indices: torch.Tensor, batch_size: int, seed: int, weights: torch.Tensor | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(indices) == 0:
            raise ValueError("cannot sample from an empty index set")
        if batch_size % world_size:
            raise UsageError(f"the global batch size {batch_size} is not divisible by the {world_size} processes; "
                             f"choose a multiple of {world_size}")
        self.indices = indices
        self.batch_size = batch_size
        self.seed = seed
        self.weights = weights
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.offset = 0
        self._order = self._epoch_order()

    def _epoch_order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.indices)
        if self.weights is None:
            order = torch.randperm(n, generator=g)
        else:
            order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        return self.indices[order]

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (or of anything drawn per element of it)."""
        if self.world_size == 1:
            return batch
        per = self.batch_size // self.world_size
        return batch[self.rank * per:(self.rank + 1) * per]

    def next(self) -> torch.Tensor:
        """This rank's part of the next global batch."""
        return self.shard(self.next_global())

    def next_global(self) -> torch.Tensor:
        """The next global batch: the same on every rank (same seed, same position), so that
        W processes together see exactly what one process would at the same batch size."""
        parts, need = [], self.batch_size
        while need > 0:
            if self.offset >= len(self._order):
                self.epoch += 1
                self.offset = 0
                self._order = self._epoch_order()
            take = self._order[self.offset:self.offset + need]
            self.offset += len(take)
            need -= len(take)
            parts.append(take)
        return torch.cat(parts)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._order = self._epoch_order()


def balanced_weights(samples: Samples, indices: torch.Tensor) -> torch.Tensor:
    """Weights that make every (subject, pose bin) group equally likely."""
    group = samples.subject[indices] * 64 + (samples.pose_bin[indices] + 1)
    _, inverse, counts = torch.unique(group, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].to(torch.float64)


def normalize(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], on whatever device ``images`` is on: the one place images
    become network input (the canonical input; a backbone whose weights expect another
    convention converts it in its first layer, an InputAdapter)."""
    out = images.to(torch.float32).mul_(1.0 / 127.5).sub_(1.0)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


@attrs.frozen
class InputConvention:
    """What a network's weights expect of their input, and what they were trained on.

    ``mean`` and ``std`` are per channel of pixels scaled to [0, 1], in the network's channel
    order (one value: every channel); ``channels`` is that order (``gray``: one luma plane);
    ``size`` the side the weights were trained at (None: any). ``trained_on`` names the data the
    weights learned from ("" for none) and ``expressions`` says whether they already recognise
    facial expressions in real photos. The engine's canonical input (``normalize``) is RGB or
    gray in [-1, 1], i.e. mean 0.5 and std 0.5.
    """

    name: str = "canonical"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    channels: Literal["rgb", "bgr", "gray"] = "rgb"
    size: int | None = None
    trained_on: str = ""
    expressions: bool = False

    @property
    def num_channels(self) -> int:
        return 1 if self.channels == "gray" else 3

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON, weights-only checkpoints)."""
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std), "channels": self.channels,
                "size": self.size, "trained_on": self.trained_on, "expressions": self.expressions}


#: The engine's own input: what ``normalize`` produces, and what backbones trained here see.
CANONICAL = InputConvention()


class InputAdapter(nn.Module):
    """Canonical input (RGB or gray in [-1, 1]) -> what ``convention`` asks for: channel order
    and count, then mean and std. It is a backbone's first layer, so the convention travels with
    the network everywhere it goes (training, evaluation, AdaBN passes, prediction), while the
    batches, augmentations and reconstruction targets stay in the one canonical form.

    ``mean`` and ``std`` are buffers, saved in every model.pt with the weights.
    """

    def __init__(self, convention: InputConvention) -> None:
        super().__init__()
        self.convention = convention
        n = convention.num_channels
        mean = torch.tensor(convention.mean, dtype=torch.float32).expand(n).clone()
        std = torch.tensor(convention.std, dtype=torch.float32).expand(n).clone()
        self.register_buffer("mean", mean.view(1, n, 1, 1))
        self.register_buffer("std", std.view(1, n, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want = self.convention.channels
        if want == "gray" and x.shape[1] == 3:
            # ITU-R 601 luma, as Pillow's "L" and OpenCV's RGB2GRAY convert.
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif want != "gray" and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if want == "bgr":
            x = x.flip(1)
        return (x * 0.5 + 0.5 - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"convention={self.convention.name!r}, channels={self.convention.channels!r}"


def input_convention(module: nn.Module) -> InputConvention:
    """The input convention of a network: its InputAdapter's (the first one found; the values
    its buffers hold, as loaded), else canonical."""
    for m in module.modules():
        if isinstance(m, InputAdapter):
            mean = tuple(round(float(v), 6) for v in m.mean.flatten())
            std = tuple(round(float(v), 6) for v in m.std.flatten())
            return attrs.evolve(m.convention, mean=mean, std=std)
    return CANONICAL


def image_batches(samples: Samples, indices: torch.Tensor, device: torch.device,
                  batch_size: int) -> Iterator[torch.Tensor]:
    """The images at ``indices`` in order, ``batch_size`` at a time, on ``device`` and normalized:
    evaluation and statistics passes, which see every image once."""
    for start in range(0, len(indices), batch_size):
        yield normalize(samples.images[indices[start:start + batch_size]].to(device))


def gather(samples: Samples, index: torch.Tensor, device: torch.device, *, labels: bool = True, pose: bool = True,
           landmarks: bool = True, channels_last: bool = False) -> Batch:
    """Gather ``index`` from the store, move to ``device`` and normalize there.

    ``labels=False`` leaves expression, subject and capture out; ``pose=False`` leaves pose
    out; ``landmarks=False`` leaves landmarks out: hidden fields are None, so a method cannot
    read them.
    """
    nb = device.type == "cuda"
    images = normalize(samples.images[index].to(device, non_blocking=nb), channels_last)

    def take(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[index].to(device, non_blocking=nb)

    return Batch(
        images=images,
        expression=take(samples.expression) if labels else None,
        subject=take(samples.subject) if labels else None,
        capture=take(samples.capture) if labels else None,
        yaw=take(samples.yaw) if pose else None,
        pose_bin=take(samples.pose_bin) if pose else None,
        landmarks=take(samples.landmarks) if landmarks else None,
    )


class PartnerTable:
    """Cross-pose partners: for an image, another image of the same capture (same subject and
    expression, another camera). Built once; drawing is vectorized."""

    def __init__(self, samples: Samples, indices: torch.Tensor | None = None) -> None:
        capture = samples.capture
        if indices is not None:  # partners only among these images (e.g. a target's adaptation half)
            inside = torch.zeros(len(capture), dtype=torch.bool)
            inside[indices] = True
            capture = torch.where(inside, capture, torch.full_like(capture, -1))
        self.order = torch.argsort(capture, stable=True)
        sorted_capture = capture[self.order]
        _, counts = torch.unique_consecutive(sorted_capture, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        group = torch.repeat_interleave(torch.arange(len(counts)), counts)
        position = torch.empty_like(self.order)
        position[self.order] = torch.arange(len(self.order))
        self.start = starts[group][torch.argsort(self.order)]  # per image, its group's start
        self.size = counts[group][torch.argsort(self.order)]
        self.position = position - self.start  # per image, its place in the group
        self.size[capture < 0] = 1  # unknown capture: no partner

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A partner per index (the image itself where it has none)."""
        size = self.size[index]
        shift = 1 + (torch.rand(len(index), generator=generator) * (size - 1).clamp(min=0)).long()
        slot = (self.position[index] + shift) % size
        return self.order[self.start[index] + slot]
