"""Endless samplers over index sets, and gathering a batch onto the device.

A sampler's position is two integers (epoch, offset) and its order is a pure function of
(seed, epoch), so a checkpoint restores it exactly without storing permutations.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

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
    become network input."""
    out = images.to(torch.float32).mul_(1.0 / 127.5).sub_(1.0)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


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

    def __init__(self, samples: Samples) -> None:
        capture = samples.capture
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
