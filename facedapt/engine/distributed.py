"""Data-parallel training through torch.distributed, without DistributedDataParallel.

Methods call their modules several times per step (source and target passes with per-domain
normalization, discriminators behind gradient reversal), which DDP's reducer does not support.
Instead every rank runs the same step on its slice of the same global batch and
:func:`average_gradients` averages the gradients of one optimizer group after backward, before
clipping and stepping; models, optimizers and schedulers then stay identical on every rank, and
gradient reversal and discriminators are correct by construction.

The process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) or SLURM's (``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_LOCALID``, ``SLURM_JOB_NODELIST``). Backend nccl on CUDA, gloo on the CPU. In a single
process every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import nn

from facedapt.errors import UsageError


@attrs.define(frozen=True)
class DistEnv:
    """Where this process sits among the ranks (read from the environment, no side effects)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"  # "torchrun" | "slurm" | "single"


def read_env(environ: dict[str, str] | None = None) -> DistEnv:
    """torchrun's variables win over SLURM's (torchrun inside an sbatch job sets both)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)), "torchrun")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        # A port per job, so two jobs sharing a node do not collide.
        port = int(env.get("MASTER_PORT", 20000 + int(env.get("SLURM_JOB_ID", "9500")) % 20000))
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       env.get("MASTER_ADDR") or first_host(nodes), port, "slurm")
    return DistEnv()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,09],cpu1`` -> ``gpu03``."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if m is None:
        return nodelist
    prefix, ranges = m.group(1), m.group(3)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def env_rank() -> int:
    return read_env().rank


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 is the only one that writes files (run directory, logs, checkpoints, results)."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group the environment describes (once per process) and return this
    rank's device: ``cuda:<local rank>`` on CUDA, else ``device`` unchanged."""
    env = read_env()
    if env.world_size <= 1:
        return device
    cuda = device.type == "cuda"
    if cuda:
        if env.local_rank >= torch.cuda.device_count():
            raise UsageError(f"local rank {env.local_rank} but only {torch.cuda.device_count()} CUDA device(s) here; "
                             "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    global _OWNED
    if not dist.is_initialized():
        _OWNED = True
        dist.init_process_group(
            backend="nccl" if cuda else "gloo", init_method=f"tcp://{env.master_addr}:{env.master_port}",
            rank=env.rank, world_size=env.world_size, **({"device_id": device} if cuda else {}))
    return device


_OWNED = False  # whether init() created the process group (shutdown() leaves a caller's alone)


def shutdown() -> None:
    global _OWNED
    if _OWNED and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills the dataset cache), then the others."""
    if is_main():
        yield
        barrier()
    else:
        barrier()
        yield


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any (keeps ranks' control flow identical)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def average(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over ranks (in place; returns it)."""
    if is_distributed():
        dist.all_reduce(t)
        t.div_(world_size())
    return t


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks: one flattened all-reduce per dtype and
    device. Every rank runs the same graph, so the same parameters have gradients everywhere."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for g in grads:
        buckets.setdefault((g.dtype, g.device), []).append(g)
    n = world_size()
    for group in buckets.values():
        flat = torch._utils._flatten_dense_tensors(group)
        dist.all_reduce(flat)
        flat.div_(n)
        for g, synced in zip(group, torch._utils._unflatten_dense_tensors(flat, group)):
            g.copy_(synced)


def broadcast_state(modules: Iterable[nn.Module], buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers (or buffers only: batch-norm statistics, which each rank
    updates from its own slice) on every rank."""
    if not is_distributed():
        return
    for module in modules:
        tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
        for t in tensors:
            dist.broadcast(t.data, src=0)

