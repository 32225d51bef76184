"""The personalized protocol under a pose shift: source people in a narrow range of views (or
weighted toward some), target people at all views (or weighted toward others)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import run_toy
from facedapt_plugins.protocols import Personalized

from facedapt.cli import main
from facedapt.data.batches import PartnerTable
from facedapt.data.samples import Samples
from facedapt.data.splits import SplitRequest, Target
from facedapt.errors import DataError, RecipeError

YAWS = [float(y) for y in range(-90, 91, 15)]
REQUEST = SplitRequest({"first": 3}, 0.5, 0.2, seed=5)


def multiview(subjects: int = 10, expressions: int = 7, per_expr: int = 2) -> Samples:
    """Every subject shows each expression in ``per_expr`` captures, each seen at the 13 yaws."""
    expr, subj, cap, yaw = [], [], [], []
    c = 0
    for s in range(subjects):
        for e in range(expressions):
            for _ in range(per_expr):
                expr += [e] * len(YAWS)
                subj += [s] * len(YAWS)
                cap += [c] * len(YAWS)
                yaw += YAWS
                c += 1
    n = len(expr)
    return Samples(images=torch.arange(n).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
                   expression=torch.tensor(expr), subject=torch.tensor(subj),
                   subject_ids=tuple(f"S{i:02d}" for i in range(subjects)), dataset="mv", yaw=torch.tensor(yaw),
                   capture=torch.tensor(cap), paths=tuple(f"img{i}" for i in range(n)))


@pytest.fixture(scope="module")
def data() -> Samples:
    return multiview()


def _person(t: Target) -> torch.Tensor:
    return torch.cat([t.adapt.indices, t.evaluate.indices])


def _abs_yaw_counts(samples: Samples, indices: torch.Tensor) -> dict[float, int]:
    vals, counts = samples.yaw[indices].abs().unique(return_counts=True)
    return dict(zip(vals.tolist(), counts.tolist()))


def test_source_is_seen_in_the_range_and_targets_at_every_view(data: Samples) -> None:
    targets = Personalized(source_yaw_max=30).split(data, None, REQUEST)
    plain = Personalized().split(data, None, REQUEST)
    assert [t.id for t in targets] == [t.id for t in plain] == ["S00", "S01", "S02"]
    t0 = targets[0]
    src, val = t0.source, t0.source_val
    assert val is not None and len(src) and len(val)
    # Source and source-validation: only |yaw| <= 30, and nothing else even reachable (partners).
    assert (src.samples.yaw.abs() <= 30).all()
    assert sorted(set(src.samples.yaw[src.indices].tolist())) == [-30.0, -15.0, 0.0, 15.0, 30.0]
    assert (val.samples.yaw[val.indices].abs() <= 30).all()
    partners = PartnerTable(src.samples).draw(src.indices, torch.Generator().manual_seed(0))
    assert (src.samples.yaw[partners].abs() <= 30).all()
    # Every source image of the plain protocol within the range is kept (the same people, same
    # validation people), nothing more.
    p_src, p_val = plain[0].source, plain[0].source_val
    assert p_val is not None
    kept = set(src.samples.paths[i] for i in src.indices.tolist())
    assert kept == {data.paths[i] for i in p_src.indices.tolist() if abs(float(data.yaw[i])) <= 30}
    assert set(val.samples.subject[val.indices].tolist()) == set(data.subject[p_val.indices].tolist())
    # Targets keep all their views, adapt and evaluate alike, split exactly as without the shift.
    for t, p in zip(targets, plain):
        assert t.adapt.samples is data and torch.equal(t.adapt.indices, p.adapt.indices)
        assert torch.equal(t.evaluate.indices, p.evaluate.indices)
        assert sorted(set(data.yaw[_person(t)].tolist())) == YAWS
        assert len(_person(t)) == 7 * 2 * 13
        assert t.source is src  # one source model for every target


def test_source_yaw_max_zero_keeps_the_frontal_view_only(data: Samples) -> None:
    t = Personalized(source_yaw_max=0).split(data, None, REQUEST)[0]
    assert set(t.source.samples.yaw.tolist()) == {0.0}
    with pytest.raises(DataError, match="source_yaw_max=5 leaves no source images"):
        odd = multiview(subjects=4)
        odd.yaw[:] = 45.0
        Personalized(source_yaw_max=5).split(odd, None, SplitRequest({"first": 1}, 0.5, 0.0, seed=0))


def test_weights_set_the_proportions_of_views(data: Samples) -> None:
    """Source toward frontal, target toward profile: per person and |yaw|, the kept fraction is
    weight / largest weight (linear between the listed points), up to rounding."""
    source_w, target_w = {0: 1.0, 90: 0.0}, {0: 1, 45: 1, 90: 4}
    targets = Personalized(source_yaw_weights=source_w, target_yaw_weights=target_w).split(data, None, REQUEST)
    src = targets[0].source
    people = len(set(src.samples.subject.tolist()))
    counts = _abs_yaw_counts(src.samples, torch.arange(len(src.samples)))
    for a in (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0):
        per_person = 14 * (1 if a == 0 else 2)  # images at |yaw| a: 14 captures, one or two sides
        want = per_person * (1 - a / 90)
        assert abs(counts.get(a, 0) - people * want) <= people, (a, counts)
    assert 90.0 not in counts and counts[0.0] == people * 14
    for t in targets:
        got = _abs_yaw_counts(t.adapt.samples, _person(t))
        rate = {0.0: 0.25, 15.0: 0.25, 30.0: 0.25, 45.0: 0.25, 60.0: 0.5, 75.0: 0.75, 90.0: 1.0}
        for a, r in rate.items():
            want = 14 * (1 if a == 0 else 2) * r
            assert math.floor(want) <= got.get(a, 0) <= math.ceil(want), (t.id, a, got)
        assert (t.adapt.samples.subject_ids == data.subject_ids) and t.evaluate.samples is t.adapt.samples
    # Range and weights together: the weights act within the range.
    both = Personalized(source_yaw_max=30, source_yaw_weights={0: 2, 30: 1}).split(data, None, REQUEST)[0].source
    c = _abs_yaw_counts(both.samples, torch.arange(len(both.samples)))
    assert set(c) == {0.0, 15.0, 30.0} and c[0.0] == people * 14 and abs(c[30.0] - people * 14) <= people


def test_pose_shift_is_seeded(data: Samples) -> None:
    kw = dict(source_yaw_weights={0: 1, 90: 0.2}, target_yaw_weights={0: 0.3, 90: 1})

    def paths(seed: int) -> tuple[list[str], list[str]]:
        t = Personalized(**kw).split(data, None, SplitRequest({"first": 3}, 0.5, 0.2, seed=seed))[0]
        return list(t.source.samples.paths), list(t.adapt.samples.paths)

    assert paths(1) == paths(1)
    assert paths(1) != paths(2)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"source_yaw_max": -5}, "data.protocol.source_yaw_max: must be a number of degrees in [0, 90], got -5"),
    ({"source_yaw_max": 120}, "data.protocol.source_yaw_max: must be a number of degrees in [0, 90], got 120"),
    ({"source_yaw_max": "30"}, "data.protocol.source_yaw_max: must be a number of degrees in [0, 90], got '30'"),
    ({"source_yaw_max": True}, "data.protocol.source_yaw_max: must be a number of degrees in [0, 90], got True"),
    ({"source_yaw_weights": {}}, "data.protocol.source_yaw_weights: must be a mapping"),
    ({"source_yaw_weights": [0, 1]}, "data.protocol.source_yaw_weights: must be a mapping {|yaw| degrees in [0, 90]: weight >= 0} with a positive weight, got [0, 1]"),
    ({"source_yaw_weights": {0: 0, 90: 0}}, "with a positive weight, got {0: 0, 90: 0}"),
    ({"target_yaw_weights": {"front": 1}}, "data.protocol.target_yaw_weights: |yaw| keys must be degrees in [0, 90], got 'front'"),
    ({"target_yaw_weights": {-30: 1}}, "data.protocol.target_yaw_weights: |yaw| keys must be degrees in [0, 90], got -30"),
    ({"target_yaw_weights": {0: -1}}, "data.protocol.target_yaw_weights: weights must be numbers >= 0, got -1 for |yaw| 0"),
    ({"target_yaw_weights": {0: "x"}}, "weights must be numbers >= 0, got 'x' for |yaw| 0"),
    ({"target_yaw_weights": {0: 1, "0": 2}}, "data.protocol.target_yaw_weights: |yaw| 0 given twice"),
])
def test_bad_arguments_name_key_and_value(kwargs: dict, match: str) -> None:
    with pytest.raises(RecipeError) as info:
        Personalized(**kwargs)
    message = str(info.value)
    assert match in message and "\n" not in message


def test_string_keys_from_json_overrides_are_degrees(data: Samples) -> None:
    a = Personalized(target_yaw_weights={"0": 1, "90": 3}).split(data, None, REQUEST)[0]
    b = Personalized(target_yaw_weights={0: 1, 90: 3}).split(data, None, REQUEST)[0]
    assert a.adapt.samples.paths == b.adapt.samples.paths


def test_unknown_yaw_is_a_data_error() -> None:
    s = multiview(subjects=4)
    s.yaw[7] = math.nan  # a target image: targets need no yaw
    Personalized(source_yaw_max=30).split(s, None, SplitRequest({"first": 1}, 0.5, 0.0, seed=0))
    s.yaw[400] = math.nan  # a source image
    with pytest.raises(DataError, match=r"needs yaw labels: 1 image\(s\) of dataset 'mv' have none, e.g. img400"):
        Personalized(source_yaw_max=30).split(s, None, SplitRequest({"first": 1}, 0.5, 0.0, seed=0))


def test_bad_argument_on_the_command_line_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["-q", "run", "pada", "data.dataset={name: synthetic, preset: tiny}", "data.protocol.source_yaw_max=-5",
               "--run-dir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "data.protocol.source_yaw_max: must be a number of degrees in [0, 90], got -5" in lines[0]
    assert "Traceback" not in out + err


def test_a_run_trains_on_the_range_and_scores_every_view(toy_plugins, tmp_path: Path) -> None:
    """End to end on the toy data (yaws -30, 0, 30): the source sees yaw 0 only, the targets are
    scored at all three yaws."""
    res = run_toy(toy_plugins, tmp_path / "run", "data.protocol={name: personalized, source_yaw_max: 0}",
                  "data.target_holdout=0.5")
    assert set(res["per_yaw"]) == {"-30", "0", "30"}, res["per_yaw"]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "pose shift: source images by |yaw| {0: " in log and "; target images by |yaw| {0: " in log


def test_target_partners_are_other_views_of_the_same_adaptation_capture(data: Samples) -> None:
    """A target image's partner is another view of its capture, drawn among the adaptation
    images only: never an image the person is scored on."""
    t = Personalized(source_yaw_max=30).split(data, None, REQUEST)[0]
    adapt = t.adapt.indices
    drawn = PartnerTable(data, adapt).draw(adapt, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) <= set(adapt.tolist())
    assert torch.equal(data.capture[drawn], data.capture[adapt])
    assert (drawn != adapt).all()  # every capture has 13 views
    # A capture cut in two: partners stay on the side given.
    one = torch.nonzero(data.capture == data.capture[adapt[0]]).squeeze(1)
    kept = one[::2]
    drawn = PartnerTable(data, kept).draw(kept, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) <= set(kept.tolist()) and (drawn != kept).all()


@pytest.mark.parametrize("paired", [True, False])
def test_target_cross_pose_gives_the_method_target_partners_without_labels(paired: bool, toy_plugins,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from facedapt_plugins.methods.pose_aware import PoseAwareADA

    seen: list = []
    original = PoseAwareADA.train_step

    def record(self, batch, ctx):  # type: ignore[no-untyped-def]
        if batch.target is not None:
            seen.append(batch.target)
        return original(self, batch, ctx)

    monkeypatch.setattr(PoseAwareADA, "train_step", record)
    run_toy(toy_plugins, tmp_path / "run", "data.target_subjects=[T00]", f"method.target_cross_pose={str(paired).lower()}")
    assert len(seen) == 4  # the adaptation steps
    if not paired:
        assert all(t.partner is None for t in seen)
        return
    for t in seen:
        p = t.partner
        assert p is not None and p.images.shape == t.images.shape
        assert (p.expression, p.subject, p.capture, p.yaw, p.landmarks) == (None,) * 5  # hidden as for the target
    # Other views (toy captures hold three), not the images themselves.
    assert any(not torch.equal(t.partner.images, t.images) for t in seen)
