"""The objects a method sees: BuildContext at build time, StepContext during a step."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from facedapt.engine import distributed
from facedapt.errors import NumericalError, RecipeError
from facedapt.plugin_manager import Plugins
from facedapt.recipe.schema import Component


@attrs.define
class BuildContext:
    """Shapes the method builds for, and the recipe's model section (role -> component)."""

    plugins: Plugins
    roles: dict[str, str]  # role -> family, from the method class
    model: dict[str, Component]
    num_classes: int
    num_pose_bins: int
    num_subjects: int
    image_shape: tuple[int, int, int]

    def build(self, role: str, default: str | Component | None = None, **provided: Any) -> Any:
        """Build the component the recipe names for ``role`` (else ``default``), passing the
        engine-known ``provided`` arguments (in_features, num_classes, ...)."""
        comp = self.model.get(role)
        if comp is None:
            if default is None:
                raise RecipeError(f"the method needs a component for model role {role!r}", key=f"model.{role}")
            comp = default if isinstance(default, Component) else Component(default)
        family = self.roles[role]
        factory = self.plugins.registry(family).get(comp.name)
        _check_provided(factory, comp.name, family, role, provided)
        return factory(**{**provided, **comp.kwargs})

    def has(self, role: str) -> bool:
        return role in self.model


def _check_provided(factory: Callable[..., Any], name: str, family: str, role: str, provided: dict[str, Any]) -> None:
    """A recipe may name a component that cannot take what the method passes this role (an
    ``mlp`` discriminator where the method conditions on predictions): say so, naming the key."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    missing = [k for k in provided if k not in params]
    if missing:
        raise RecipeError(f"{name!r} does not take {', '.join(map(repr, missing))}, which the method passes to this "
                          f"role; name {family} that do (`facedapt plugins`)", key=f"model.{role}")


class StepContext:
    """Progress through the phase, precision, and the update rule's backward/step."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], params: dict[str, list[nn.Parameter]],
                 autocast: Callable[[], contextlib.AbstractContextManager], scaler: torch.amp.GradScaler | None,
                 grad_clip: float | None, nan_policy: str, total_steps: int, phase: str) -> None:
        self.optimizers = optimizers
        self.params = params
        self._autocast = autocast
        self.scaler = scaler
        self.grad_clip = grad_clip
        self.nan_policy = nan_policy
        self.total_steps = max(1, total_steps)
        self.phase = phase
        self.step = 0
        self.skipped = False
        self._scaled: set[str] = set()  # groups the scaler stepped since its last update

    def begin_step(self, step: int) -> None:
        """Called by the loop before the method's step."""
        self.step, self.skipped = step, False

    def end_step(self) -> None:
        """Called by the loop after the method's step: the loss scale is updated once per step,
        from the overflow checks of every group stepped in it (several updates a step would grow
        the scale several times as fast, and a group that overflowed would not hold back the next)."""
        if self.scaler is not None and self._scaled:
            self.scaler.update()
        self._scaled.clear()

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.total_steps)

    def autocast(self) -> contextlib.AbstractContextManager:
        return self._autocast()

    def check_finite(self, terms: dict[str, torch.Tensor]) -> bool:
        """False (skip the step) if any term is NaN/Inf under policy `skip`; raises under `abort`.
        One device-to-host read per step; the per-term names are read only on failure."""
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
        finite = torch.isfinite(values).all()
        if distributed.is_distributed():
            # Every rank must skip or step together: a rank that skipped alone would leave the
            # others waiting in the gradient all-reduce.
            flag = finite.float().reshape(1)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            finite = flag[0] > 0
        if bool(finite):
            return True
        bad = {name: float(v) for name, v in zip(terms, values.tolist()) if not math.isfinite(v)}
        if self.nan_policy == "abort":
            detail = ", ".join(f"{k}={v}" for k, v in bad.items()) or "in another process"
            raise NumericalError(f"non-finite loss at {self.phase} step {self.step + 1}: {detail} "
                                 "(train.nan_policy=skip skips such steps; train.grad_clip may help)")
        self.skipped = True
        return False

    def update(self, loss: torch.Tensor, group: str = "main", terms: dict[str, torch.Tensor] | None = None,
               retain_graph: bool = False) -> bool:
        """Backward ``loss`` and step optimizer ``group``; returns False if the step was skipped.

        Under fp16 the loss scale is updated by :meth:`end_step`, or here first when ``group`` was
        already stepped in this step (GradScaler allows one step per optimizer between updates)."""
        if not self.check_finite(terms or {"loss": loss}):
            self.optimizers[group].zero_grad(set_to_none=True)
            return False
        opt = self.optimizers[group]
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            if group in self._scaled:
                self.end_step()
            self.scaler.scale(loss).backward(retain_graph=retain_graph)
            # The loss scale is the same on every rank, so averaging scaled gradients is exact,
            # and an overflow on one rank reaches all of them (inf stays inf): all skip together.
            distributed.average_gradients(self.params[group])
            if self.grad_clip:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.params[group], self.grad_clip)
            self.scaler.step(opt)
            self._scaled.add(group)
        else:
            loss.backward(retain_graph=retain_graph)
            distributed.average_gradients(self.params[group])  # a no-op in a single process
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params[group], self.grad_clip)
            opt.step()
        return True
