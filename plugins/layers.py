"""Modules shared by the network plugins and the methods.

- :class:`GradientReversal` / :class:`GradientReversalLayer`: identity forward, ``-lambda``
  times the gradient backward, with the DANN warm-up schedule kept in a buffer so that a
  checkpoint carries it.
- :class:`DomainBatchNorm` (1d/2d): batch norm with one set of running statistics per domain,
  for the recipe switch ``norm: per_domain``; :func:`domain` selects the domain for a block of
  code, :func:`convert_to_domain_bn` turns an ordinary model into one.
- :func:`recompute_bn_stats`: AdaBN, i.e. batch-norm statistics re-estimated on given batches.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "DOMAINS",
    "DomainBatchNorm",
    "DomainBatchNorm1d",
    "DomainBatchNorm2d",
    "GradientReversal",
    "GradientReversalLayer",
    "convert_to_domain_bn",
    "domain",
    "grad_reverse",
    "recompute_bn_stats",
    "set_domain",
    "warmup_lambda",
]

DOMAINS: tuple[str, str] = ("source", "target")


# --------------------------------------------------------------------------- gradient reversal
class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``-coeff``.

    ``coeff`` may be a float or a 0-dim tensor (a tensor avoids a device sync per step).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float | torch.Tensor) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        coeff = ctx.coeff
        if isinstance(coeff, torch.Tensor):
            coeff = coeff.to(device=grad.device, dtype=grad.dtype)
        return grad.neg() * coeff, None


def grad_reverse(x: torch.Tensor, coeff: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Functional form of :class:`GradientReversal`."""
    return GradientReversal.apply(x, coeff)


def warmup_lambda(progress: float | torch.Tensor, max_lambda: float = 1.0, gamma: float = 10.0) -> Any:
    """DANN schedule ``max_lambda * (2 / (1 + exp(-gamma p)) - 1)``; 0 at p=0, ~max_lambda at p=1."""
    if isinstance(progress, torch.Tensor):
        return max_lambda * (2.0 / (1.0 + torch.exp(-gamma * progress)) - 1.0)
    return max_lambda * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


class GradientReversalLayer(nn.Module):
    """Gradient reversal with a warm-up (``schedule="warmup"``) or fixed lambda (``"fixed"``).

    The step counter is the persistent buffer ``num_steps`` (in ``state_dict``), so a resumed
    run continues the schedule where it stopped. Progress is ``min(num_steps / max_steps, 1)``.

    With ``auto_step=True`` every forward pass in training mode advances the counter by one.
    A method that calls the layer more than once per update should pass ``auto_step=False``
    and call :meth:`advance` once per update instead (or :meth:`set_step` from the engine's
    step counter).
    """

    num_steps: torch.Tensor

    def __init__(
        self,
        max_lambda: float = 1.0,
        gamma: float = 10.0,
        max_steps: int = 1000,
        schedule: Literal["warmup", "fixed"] = "warmup",
        auto_step: bool = True,
    ) -> None:
        super().__init__()
        if schedule not in ("warmup", "fixed"):
            raise ValueError(f"schedule must be 'warmup' or 'fixed', got {schedule!r}")
        if schedule == "warmup" and max_steps <= 0:
            raise ValueError(f"max_steps must be positive for the warm-up schedule, got {max_steps}")
        self.max_lambda = float(max_lambda)
        self.gamma = float(gamma)
        self.max_steps = int(max_steps)
        self.schedule = schedule
        self.auto_step = auto_step
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    @property
    def progress(self) -> float:
        return min(int(self.num_steps) / self.max_steps, 1.0) if self.max_steps > 0 else 1.0

    @property
    def coeff(self) -> float:
        """The current lambda as a float (for logging; reads the counter from the device)."""
        if self.schedule == "fixed":
            return self.max_lambda
        return float(warmup_lambda(self.progress, self.max_lambda, self.gamma))

    def _coeff_tensor(self) -> torch.Tensor | float:
        # Computed on the counter's device so a CUDA step needs no host round trip.
        if self.schedule == "fixed":
            return self.max_lambda
        p = (self.num_steps.to(torch.float32) / self.max_steps).clamp(max=1.0)
        return warmup_lambda(p, self.max_lambda, self.gamma)

    def advance(self, n: int = 1) -> None:
        self.num_steps.add_(n)

    def set_step(self, step: int) -> None:
        self.num_steps.fill_(int(step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = grad_reverse(x, self._coeff_tensor())
        if self.training and self.auto_step:
            self.advance()
        return out

    def extra_repr(self) -> str:
        return (f"schedule={self.schedule}, max_lambda={self.max_lambda}, gamma={self.gamma}, "
                f"max_steps={self.max_steps}, auto_step={self.auto_step}")


# --------------------------------------------------------------------------- domain batch norm
class DomainBatchNorm(nn.Module):
    """Batch norm with separate running statistics per domain ("source", "target").

    The active domain is chosen with :func:`domain` / :func:`set_domain` ("source" by default).
    The affine parameters are shared across domains unless ``share_affine=False``; the running
    statistics are always per domain (buffers ``running_mean_<domain>``, ``running_var_<domain>``,
    ``num_batches_tracked_<domain>``). Works for any input with channels in dim 1; the 1d/2d
    subclasses only add the input-rank check of their ``nn.BatchNorm`` counterparts.
    """

    _valid_dims: tuple[int, ...] = (2, 3, 4, 5)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        share_affine: bool = True,
        domains: Sequence[str] = DOMAINS,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if len(set(domains)) != len(domains) or not domains:
            raise ValueError(f"domains must be distinct and non-empty, got {domains!r}")
        fk = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.share_affine = share_affine
        self.domains = tuple(domains)
        self.active = self.domains[0]
        if affine:
            for suffix in ([""] if share_affine else [f"_{d}" for d in self.domains]):
                self.register_parameter(f"weight{suffix}", nn.Parameter(torch.ones(num_features, **fk)))
                self.register_parameter(f"bias{suffix}", nn.Parameter(torch.zeros(num_features, **fk)))
        if track_running_stats:
            for d in self.domains:
                self.register_buffer(f"running_mean_{d}", torch.zeros(num_features, **fk))
                self.register_buffer(f"running_var_{d}", torch.ones(num_features, **fk))
                self.register_buffer(f"num_batches_tracked_{d}", torch.zeros((), dtype=torch.long, device=device))

    # -- access
    def stats(self, d: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(running_mean, running_var, num_batches_tracked) of domain ``d`` (default: active)."""
        d = d or self.active
        self._check_domain(d)
        return (getattr(self, f"running_mean_{d}"), getattr(self, f"running_var_{d}"),
                getattr(self, f"num_batches_tracked_{d}"))

    def affine_params(self, d: str | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.affine:
            return None, None
        if self.share_affine:
            return self.weight, self.bias
        d = d or self.active
        return getattr(self, f"weight_{d}"), getattr(self, f"bias_{d}")

    def set_domain(self, d: str) -> None:
        self._check_domain(d)
        self.active = d

    def reset_running_stats(self, d: str | None = None) -> None:
        """Reset the statistics of domain ``d``, or of every domain when ``d`` is None."""
        if not self.track_running_stats:
            return
        for name in ([d] if d is not None else self.domains):
            mean, var, count = self.stats(name)
            mean.zero_()
            var.fill_(1.0)
            count.zero_()

    def _check_domain(self, d: str) -> None:
        if d not in self.domains:
            raise ValueError(f"unknown domain {d!r}; this layer has {', '.join(self.domains)}")

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in self._valid_dims:
            raise ValueError(f"{type(self).__name__}: expected {self._valid_dims}-D input, got {x.dim()}-D")

    # -- forward (mirrors torch.nn.modules.batchnorm._BatchNorm.forward)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        weight, bias = self.affine_params()
        if not self.track_running_stats:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        mean, var, count = self.stats()
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            count.add_(1)
            if self.momentum is None:  # cumulative moving average (used by AdaBN)
                factor = 1.0 / float(count)
        return F.batch_norm(x, mean, var, weight, bias, self.training, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"share_affine={self.share_affine}, domains={self.domains}, active={self.active!r}")


class DomainBatchNorm1d(DomainBatchNorm):
    _valid_dims = (2, 3)


class DomainBatchNorm2d(DomainBatchNorm):
    _valid_dims = (4,)


def set_domain(model: nn.Module, name: str) -> None:
    """Make ``name`` the active domain of every :class:`DomainBatchNorm` in ``model``."""
    for m in model.modules():
        if isinstance(m, DomainBatchNorm):
            m.set_domain(name)


@contextlib.contextmanager
def domain(model: nn.Module, name: str) -> Iterator[nn.Module]:
    """Run a block with ``name`` as the active domain; restores each layer's previous domain.

    A model without domain batch norms is left alone, so methods can use this unconditionally
    whatever the recipe's ``norm`` switch says.
    """
    layers = [m for m in model.modules() if isinstance(m, DomainBatchNorm)]
    previous = [m.active for m in layers]
    try:
        for m in layers:
            m.set_domain(name)
        yield model
    finally:
        for m, prev in zip(layers, previous):
            m.active = prev


def convert_to_domain_bn(model: nn.Module, domains: Sequence[str] = DOMAINS, share_affine: bool = True) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d`` in ``model`` by a domain batch norm.

    Every domain starts from the original layer's running statistics (so a source-trained
    model keeps its behaviour in both domains until the target statistics move). Returns the
    converted model (a new module when ``model`` itself is a batch norm).
    """
    if isinstance(model, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(model, nn.SyncBatchNorm):
        cls = DomainBatchNorm1d if isinstance(model, nn.BatchNorm1d) else DomainBatchNorm2d
        ref = model.running_mean if model.running_mean is not None else model.weight
        new = cls(model.num_features, eps=model.eps, momentum=model.momentum, affine=model.affine,
                  track_running_stats=model.track_running_stats, share_affine=share_affine, domains=domains,
                  device=ref.device if ref is not None else None, dtype=ref.dtype if ref is not None else None)
        with torch.no_grad():
            if model.affine:
                for d in ([None] if share_affine else list(domains)):
                    w, b = new.affine_params(d)
                    w.copy_(model.weight)
                    b.copy_(model.bias)
            if model.track_running_stats:
                for d in domains:
                    mean, var, count = new.stats(d)
                    mean.copy_(model.running_mean)
                    var.copy_(model.running_var)
                    count.copy_(model.num_batches_tracked)
        new.train(model.training)
        return new
    for name, child in model.named_children():
        converted = convert_to_domain_bn(child, domains, share_affine)
        if converted is not child:
            setattr(model, name, converted)
    return model


# --------------------------------------------------------------------------- AdaBN
def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if (isinstance(m, _BatchNorm) and m.track_running_stats)
            or (isinstance(m, DomainBatchNorm) and m.track_running_stats)]


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    batches: Iterable[Any],
    domain: str | None = None,
    forward: Callable[[Any], Any] | None = None,
) -> int:
    """Re-estimate batch-norm running statistics on ``batches`` (AdaBN).

    Resets the statistics, then runs forward passes with momentum None (the cumulative average
    over batches) under ``no_grad``. Only the batch norms are in training mode meanwhile, so
    dropout stays off; every module's mode and momentum are restored afterwards.

    ``domain``: for :class:`DomainBatchNorm` layers, which domain's statistics to recompute
    (default: each layer's active domain); plain batch norms are always recomputed.
    ``forward``: how to run a batch (default ``model(batch)``), for graphs that are not a
    single call, e.g. ``lambda x: encoder(backbone(x))``.
    Returns the number of batches used.
    """
    layers = _bn_layers(model)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    run = forward if forward is not None else model
    ctx = _domain_ctx(model, domain)
    # Kept to undo the reset if no batch arrives: reset statistics would silently be N(0, 1).
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    n = 0
    try:
        with ctx:
            for m in layers:
                if isinstance(m, DomainBatchNorm):
                    m.reset_running_stats(m.active)
                else:
                    m.reset_running_stats()
                m.momentum = None
            model.eval()
            for m in layers:
                m.train()
            for batch in batches:
                run(batch)
                n += 1
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, mode in modes.items():
            m.training = mode
    if n == 0:
        model.load_state_dict(saved, strict=False)
        raise ValueError("recompute_bn_stats: no batches given")
    return n


def _domain_ctx(model: nn.Module, name: str | None) -> contextlib.AbstractContextManager[Any]:
    return domain(model, name) if name is not None else contextlib.nullcontext()
