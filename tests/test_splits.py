"""Target holdout: whole captures go to one side, stratified by expression."""

from __future__ import annotations

import pytest
import torch

from facedapt.data.samples import Samples
from facedapt.data.splits import SplitRequest, split_holdout
from facedapt.errors import DataError
from facedapt_plugins.protocols import Personalized


def samples(captures_per_expr: int = 2, views: int = 5, expressions: int = 7, subjects: int = 3) -> Samples:
    """Every subject shows each expression in ``captures_per_expr`` captures of ``views`` views."""
    expr, subj, cap = [], [], []
    c = 0
    for s in range(subjects):
        for e in range(expressions):
            for _ in range(captures_per_expr):
                expr += [e] * views
                subj += [s] * views
                cap += [c] * views
                c += 1
    n = len(expr)
    return Samples(images=torch.zeros(n, 1, 4, 4, dtype=torch.uint8), expression=torch.tensor(expr),
                   subject=torch.tensor(subj), subject_ids=tuple(f"S{i}" for i in range(subjects)), dataset="t",
                   yaw=torch.zeros(n), capture=torch.tensor(cap))


@pytest.mark.parametrize("per_expr", [2, 3, 4])
def test_no_capture_on_both_sides_and_every_expression_on_both(per_expr: int) -> None:
    s = samples(per_expr)
    targets = Personalized().split(s, None, SplitRequest({"first": 2}, 0.5, 0.2, seed=3))
    assert len(targets) == 2
    for t in targets:
        adapt, held = t.adapt.indices, t.evaluate.indices
        assert len(adapt) + len(held) == per_expr * 7 * 5
        assert not set(s.capture[adapt].tolist()) & set(s.capture[held].tolist())
        assert set(s.expression[adapt].tolist()) == set(s.expression[held].tolist()) == set(range(7))
        assert (s.subject[held] == s.subject_ids.index(t.id)).all()


def test_split_is_seeded_and_images_without_capture_stand_alone() -> None:
    s = samples(2)
    idx = s.indices_of_subject("S1")
    a1, e1 = split_holdout(s, idx, 0.5, 7)
    a2, e2 = split_holdout(s, idx, 0.5, 7)
    assert torch.equal(a1, a2) and torch.equal(e1, e2)
    others = [split_holdout(s, idx, 0.5, seed)[1] for seed in range(8)]
    assert any(not torch.equal(e1, o) for o in others)
    s.capture[:] = -1  # no capture known: every image is its own capture, still stratified
    adapt, held = split_holdout(s, idx, 0.5, 7)
    assert len(held) == len(idx) // 2 and set(s.expression[held].tolist()) == set(range(7))
    assert not set(adapt.tolist()) & set(held.tolist())


def test_transductive_and_too_large_holdout() -> None:
    s = samples(1)
    idx = s.indices_of_subject("S0")
    adapt, held = split_holdout(s, idx, 0.0, 0)
    assert torch.equal(adapt, idx) and torch.equal(held, idx)
    adapt, held = split_holdout(s, idx, 0.5, 0)  # one capture per expression: whole captures held out
    assert len(adapt) and len(held) and not set(s.capture[adapt].tolist()) & set(s.capture[held].tolist())
    one = samples(1, expressions=1, subjects=1)
    with pytest.raises(DataError, match="leaves no images to adapt on"):
        split_holdout(one, one.indices_of_subject("S0"), 0.9, 0)


def test_synthetic_captures_hold_every_view() -> None:
    from facedapt.data.store import materialize
    from facedapt_plugins.datasets.synthetic.source import SyntheticFaces

    s = materialize(SyntheticFaces(preset="tiny"))
    idx = s.indices_of_subject(s.subject_ids[0])
    adapt, held = split_holdout(s, idx, 0.5, 0)
    assert not set(s.capture[adapt].tolist()) & set(s.capture[held].tolist())
    for c in s.capture[held].unique():  # all five views of a held-out capture are held out
        assert int((s.capture[held] == c).sum()) == 5
