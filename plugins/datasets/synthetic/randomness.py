"""Counter-based random numbers: every value is a pure function of (seed, stream, index, k).

No generator state is carried between batches, so a face renders bit-identically whatever
batch it is rendered in. Only exact integer and float arithmetic is used.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # Multipliers stay below 2**31 so int64 products never overflow.
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


def _base(seed: int, stream: int) -> int:
    h = (seed * 0x9E3779B1 + stream * 0x85EBCA77 + 0x27D4EB2F) & _M32
    return int(_mix32(torch.tensor(h, dtype=torch.int64)))


def hash_bits(seed: int, stream: int, index: torch.Tensor, k: int) -> torch.Tensor:
    """32 random bits per (index, j), j < k: int64 [len(index), k]."""
    x = _mix32((index.to(torch.int64)[:, None] & _M32) ^ _base(seed, stream))
    j = torch.arange(1, k + 1, dtype=torch.int64)[None, :]
    return _mix32((x + j * 0x9E3779B9) & _M32)


def uniform(seed: int, stream: int, index: torch.Tensor, k: int) -> torch.Tensor:
    """float32 [len(index), k] uniform in [0, 1) (24-bit, exactly representable)."""
    return (hash_bits(seed, stream, index, k) >> 8).to(torch.float32) / 16777216.0


def normal(seed: int, stream: int, index: torch.Tensor, k: int) -> torch.Tensor:
    """float32 [len(index), k], approximately standard normal (Irwin-Hall of four uniforms)."""
    u = uniform(seed, stream, index, 4 * k).view(-1, k, 4).sum(-1)
    return (u - 2.0) * math.sqrt(3.0)


def noise_bank(seed: int, length: int) -> torch.Tensor:
    """A fixed table of approximately normal noise that images read windows of."""
    bits = hash_bits(seed, 9001, torch.arange(length, dtype=torch.int64), 1)[:, 0]
    total = (bits & 255) + ((bits >> 8) & 255) + ((bits >> 16) & 255) + ((bits >> 24) & 255)
    return (total.to(torch.float32) - 510.0) / 147.8
