"""On-device batch augmentations: label consistency, reproducibility and RNG isolation."""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import pytest
import torch
from facedapt_plugins import augmentations as aug_mod
from facedapt_plugins.landmarks import (
    FLIP_PERM_5,
    FLIP_PERM_68,
    TEMPLATE_5,
    five_points,
)

from facedapt.data import NUM_POSE_BINS, bin_to_yaw, yaw_to_bin
from facedapt.method import Batch
from facedapt.registry import Registry, bind_kwargs

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
H = W = 64


def _template(device: str = "cpu") -> torch.Tensor:
    return torch.tensor(TEMPLATE_5, device=device) * torch.tensor([W, H], device=device)


def _landmarks68(b: int, device: str, gen: torch.Generator) -> torch.Tensor:
    # Plausible-ish 68 points: random positions on a 1/256 pixel grid (so W-1-x is exact).
    lm = torch.rand(b, 68, 2, generator=gen) * torch.tensor([W - 1, H - 1])
    return (torch.round(lm * 256) / 256).to(device)


def _batch(device: str = "cpu", b: int = 6, k: int = 68, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(b, 3, H, W, generator=gen) * 2 - 1).to(device)
    yaw = bin_to_yaw(torch.arange(b) % NUM_POSE_BINS).to(device)
    yaw[-1] = math.nan
    # on the 1/256 grid, like _landmarks68
    lm = _landmarks68(b, device, gen) if k == 68 else torch.round(_template(device).expand(b, 5, 2) * 256) / 256
    return Batch(images=images, expression=torch.arange(b, device=device) % 7, yaw=yaw,
                 pose_bin=yaw_to_bin(yaw), subject=torch.zeros(b, dtype=torch.long, device=device),
                 landmarks=lm)


def _registry() -> Registry:
    reg = Registry("augmentations")
    aug_mod.facedapt_register_augmentations(reg)
    return reg


# ----------------------------------------------------------------------------- registration


def test_registration_and_recipe_kwargs() -> None:
    reg = _registry()
    assert reg.names() == ["align", "flip", "photometric", "pose_warp"]
    for name, kwargs in [("flip", {"p": 0.5}), ("align", {"size": 48, "zoom": 0.9}),
                         ("pose_warp", {"max_degrees": 15, "p": 0.5}),
                         ("photometric", {"brightness": 0.1, "blur_p": 0.2})]:
        bind_kwargs(reg.get(name), kwargs, key=f"augmentations.{name}")
        assert callable(reg.get(name)(**kwargs))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        aug_mod.flip(p=1.5)
    with pytest.raises(ValueError):
        aug_mod.pose_warp(max_degrees=60)  # the depth template would fold
    with pytest.raises(ValueError):
        aug_mod.photometric(gamma=1.0)


# ----------------------------------------------------------------------------- flip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [68, 5])
def test_two_flips_give_the_input_back_exactly(device: str, k: int) -> None:
    batch = _batch(device, k=k)
    flip = aug_mod.flip(p=0.5)
    always = aug_mod.flip(p=1.0)
    twice = always(always(batch))
    assert torch.equal(twice.images, batch.images)
    assert torch.allclose(twice.yaw, batch.yaw, equal_nan=True, atol=0, rtol=0)
    assert torch.equal(twice.pose_bin, batch.pose_bin)
    assert torch.equal(twice.landmarks, batch.landmarks)
    # off the grid W-1-x may round once: still back within float precision
    off_grid = attrs.evolve(batch, landmarks=batch.landmarks + 1e-3 / 3)
    torch.testing.assert_close(always(always(off_grid)).landmarks, off_grid.landmarks, atol=1e-5, rtol=0)
    # p < 1: each sample either flipped or bit-identical
    once = flip(batch)
    same = (once.images == batch.images).flatten(1).all(1)
    mirrored = (once.images == batch.images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())


def test_flip_swaps_eye_landmarks() -> None:
    batch = _batch(k=68)
    out = aug_mod.flip(p=1.0)(batch)
    lm, new = batch.landmarks, out.landmarks
    # the subject's right eye (36..41) after flipping is the mirrored left eye (45, 44, ..)
    for i, j in [(36, 45), (39, 42), (37, 44), (41, 46)]:
        assert torch.equal(new[:, i, 0], (W - 1) - lm[:, j, 0])
        assert torch.equal(new[:, i, 1], lm[:, j, 1])
    assert torch.equal(new[:, 30, 0], (W - 1) - lm[:, 30, 0])  # the nose stays the nose
    five = _batch(k=5)
    new5 = aug_mod.flip(p=1.0)(five).landmarks
    assert torch.equal(new5[:, 0, 0], (W - 1) - five.landmarks[:, 1, 0])
    assert torch.equal(new5[:, 3, 1], five.landmarks[:, 4, 1])
    # image-left eye stays to the left of the image-right eye after flipping
    assert bool((new5[:, 0, 0] < new5[:, 1, 0]).all())


def test_flip_tables_are_involutions() -> None:
    for perm in (FLIP_PERM_68, FLIP_PERM_5):
        assert sorted(perm) == list(range(len(perm)))
        assert all(perm[p] == i for i, p in enumerate(perm))


def test_flip_negates_yaw_and_mirrors_pose_bins() -> None:
    yaw = bin_to_yaw(torch.arange(NUM_POSE_BINS))
    batch = Batch(images=torch.zeros(NUM_POSE_BINS, 1, 8, 8), yaw=yaw, pose_bin=yaw_to_bin(yaw))
    out = aug_mod.flip(p=1.0)(batch)
    assert torch.equal(out.yaw, -yaw)
    assert torch.equal(out.pose_bin, NUM_POSE_BINS - 1 - batch.pose_bin)
    # pose bins alone (yaw hidden): still mirrored, unknown (-1) kept
    bins = torch.tensor([0, 3, 6, 12, -1])
    out = aug_mod.flip(p=1.0)(Batch(images=torch.zeros(5, 1, 8, 8), pose_bin=bins))
    assert out.pose_bin.tolist() == [12, 9, 6, 0, -1] and out.yaw is None


def test_partner_is_flipped_with_its_anchor() -> None:
    # A cross-pose partner (same subject and expression, another view) is gathered before
    # augmentation; it must be mirrored exactly where its anchor is.
    batch = _batch(b=12)
    partner = _batch(b=12, seed=1)
    out = aug_mod.flip(p=0.5)(attrs.evolve(batch, partner=partner))
    flipped = (out.images == batch.images.flip(-1)).flatten(1).all(1)
    assert 0 < int(flipped.sum()) < 12  # both cases occur
    mirrored = aug_mod.flip(p=1.0)(partner)
    want = flipped.view(-1, 1, 1, 1)
    assert torch.equal(out.partner.images, torch.where(want, mirrored.images, partner.images))
    assert torch.allclose(out.partner.yaw, torch.where(flipped, -partner.yaw, partner.yaw), equal_nan=True)
    assert torch.equal(out.partner.pose_bin, torch.where(flipped, mirrored.pose_bin, partner.pose_bin))
    assert torch.equal(out.partner.landmarks, torch.where(flipped.view(-1, 1, 1), mirrored.landmarks,
                                                          partner.landmarks))
    # the anchor's own flip draws the same numbers with or without a partner
    torch.manual_seed(3)
    alone = aug_mod.flip(p=0.5)(batch)
    torch.manual_seed(3)
    paired = aug_mod.flip(p=0.5)(attrs.evolve(batch, partner=partner))
    assert torch.equal(alone.images, paired.images)


# ----------------------------------------------------------------------------- pose warp


def _spot_image(centre: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """[B, 1, H, W] dark face with one bright Gaussian spot per sample at ``centre`` [B, 2]."""
    ys = torch.arange(H, dtype=torch.float32).view(1, H, 1)
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, W)
    d2 = (xs - centre[:, 0].view(-1, 1, 1)) ** 2 + (ys - centre[:, 1].view(-1, 1, 1)) ** 2
    return (torch.exp(-d2 / (2 * sigma**2)) * 2 - 1).unsqueeze(1)


def _spot_x(images: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Sub-pixel x of the brightest spot on each sample's ``row``."""
    lines = images[torch.arange(len(images)), 0, row.round().long()] + 1  # [B, W]
    peak = lines.argmax(dim=1, keepdim=True)
    xs = torch.arange(W, dtype=torch.float32).expand_as(lines)
    window = ((xs - peak).abs() <= 3).float() * lines
    return (window * xs).sum(1) / window.sum(1)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_degree_pose_warp_is_identity(device: str) -> None:
    batch = _batch(device)
    out = aug_mod.pose_warp(max_degrees=0.0, p=1.0)(batch)
    assert torch.equal(out.images, batch.images) and torch.equal(out.landmarks, batch.landmarks)
    # a vanishing delta runs the whole resampling path and still returns the input
    tiny = aug_mod.pose_warp(min_degrees=1e-4, max_degrees=1e-4, p=1.0)(batch)
    inside = batch.yaw.abs() < 90  # not NaN, and not pinned at ±90 by the clamp
    assert bool((tiny.yaw[inside] != batch.yaw[inside]).all())
    torch.testing.assert_close(tiny.images, batch.images, atol=1e-4, rtol=0)
    torch.testing.assert_close(tiny.landmarks, batch.landmarks, atol=1e-4, rtol=0)


@pytest.mark.parametrize("k", [5, 68])
def test_labels_and_content_follow_the_pose_warp(k: int) -> None:
    b = 8
    five = _template().expand(b, 5, 2).clone()
    if k == 5:
        lm = five
    else:  # 68 points whose derived five points are the template
        lm = torch.full((b, 68, 2), 20.0)
        lm[:, 36:42], lm[:, 42:48], lm[:, 30], lm[:, 48], lm[:, 54] = (
            five[:, None, 0], five[:, None, 1], five[:, 2], five[:, 3], five[:, 4])
    nose = 30 if k == 68 else 2
    images = _spot_image(lm[:, nose])
    yaw = torch.tensor([0.0, 15.0, -30.0, 85.0, -85.0, 45.0, 0.0, math.nan])
    batch = Batch(images=images, yaw=yaw, pose_bin=yaw_to_bin(yaw), landmarks=lm)
    torch.manual_seed(3)
    out = aug_mod.pose_warp(min_degrees=12.0, max_degrees=12.0, p=1.0)(batch)

    known = ~torch.isnan(yaw)
    delta = out.yaw - yaw
    expected = (yaw + torch.where(delta > 0, 12.0, -12.0)).clamp(-90, 90)
    torch.testing.assert_close(out.yaw[known], expected[known])
    assert bool((delta[known] != 0).all()) and bool((delta[known].sign() != 0).all())
    assert torch.equal(out.pose_bin, torch.where(known, yaw_to_bin(out.yaw), batch.pose_bin))
    # unknown yaw: left exactly as it was
    assert torch.isnan(out.yaw[-1]) and torch.equal(out.images[-1], images[-1])
    assert torch.equal(out.landmarks[-1], lm[-1])

    # Positive delta turns the face toward the viewer's right: the nose (nearest the camera)
    # moves toward larger x, in the image and in the landmarks alike, by the same amount.
    before = _spot_x(images, lm[:, nose, 1])
    after = _spot_x(out.images, out.landmarks[:, nose, 1])
    shift = out.landmarks[:, nose, 0] - lm[:, nose, 0]
    assert bool((shift[known].sign() == delta[known].sign()).all())
    assert bool((shift[known].abs() > 1.0).all())  # a visible move (the ±90 clamp shortens two)
    torch.testing.assert_close((after - before)[known], shift[known], atol=0.3, rtol=0)
    assert torch.equal(out.landmarks[..., 1], lm[..., 1])  # yaw keeps rows


def test_pose_warp_without_landmarks_or_yaw() -> None:
    batch = _batch(k=68)
    no_lm = aug_mod.pose_warp(p=1.0, min_degrees=5)(attrs.evolve(batch, landmarks=None))
    assert no_lm.landmarks is None and not torch.equal(no_lm.images[2:5], batch.images[2:5])
    no_yaw = attrs.evolve(batch, yaw=None)
    assert aug_mod.pose_warp(p=1.0)(no_yaw) is no_yaw


# ----------------------------------------------------------------------------- align


def _rotate(points: torch.Tensor, degrees: float, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * scale
    return points @ rot.T + torch.tensor(shift)


@pytest.mark.parametrize("device", DEVICES)
def test_align_maps_landmarks_onto_the_template(device: str) -> None:
    tpl = _template()
    five = torch.stack([_rotate(tpl, 20, 0.8, (5, -3)), _rotate(tpl, -35, 1.1, (-4, 2)),
                        tpl, torch.full((5, 2), math.nan)])
    lm68 = torch.full((4, 68, 2), 10.0)
    lm68[:, 36:42], lm68[:, 42:48] = five[:, None, 0], five[:, None, 1]
    lm68[:, 30], lm68[:, 48], lm68[:, 54] = five[:, 2], five[:, 3], five[:, 4]
    images = _spot_image(five[:, 2].nan_to_num(0.0))
    align = aug_mod.align()
    for lm in (five, lm68):
        batch = Batch(images=images.to(device), landmarks=lm.to(device))
        out = align(batch)
        got = five_points(out.landmarks)
        torch.testing.assert_close(got[:3], tpl.to(device).expand(3, 5, 2), atol=1e-3, rtol=0)
        # the image moved with the landmarks: the spot on the nose is now at the template's nose
        spot = _spot_x(out.images[:3].cpu(), got[:3, 2, 1].cpu())
        torch.testing.assert_close(spot, tpl[2, 0].expand(3), atol=0.3, rtol=0)
        # no landmarks: unchanged
        assert torch.equal(out.images[3], batch.images[3])
        assert torch.equal(out.landmarks[3].nan_to_num(-7), batch.landmarks[3].nan_to_num(-7))
    # a different output size, deterministic
    small = aug_mod.align(size=48)
    out1, out2 = small(batch), small(batch)
    assert out1.images.shape == (4, 1, 48, 48) and torch.equal(out1.images, out2.images)
    tpl_small = small.template_pixels(48, 48, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(five_points(out1.landmarks)[:3].cpu(), tpl_small.expand(3, 5, 2), atol=1e-3, rtol=0)
    # a partner batch is aligned (and resized) as its anchor is, so both can be encoded together
    paired = small(attrs.evolve(batch, partner=batch))
    assert torch.equal(paired.partner.images, out1.images)
    assert torch.equal(paired.partner.landmarks.nan_to_num(-7), out1.landmarks.nan_to_num(-7))


# ----------------------------------------------------------------------------- photometric


def test_photometric_keeps_labels_and_changes_pixels() -> None:
    batch = _batch()
    out = aug_mod.photometric(p=1.0)(batch)
    assert not torch.equal(out.images, batch.images)
    assert out.images.shape == batch.images.shape and out.images.dtype == batch.images.dtype
    assert float(out.images.min()) >= -1.0 and float(out.images.max()) <= 1.0
    for field in ("expression", "yaw", "pose_bin", "subject", "landmarks"):
        assert getattr(out, field) is getattr(batch, field)
    off = aug_mod.photometric(brightness=0, contrast=0, gamma=0, noise=0, blur=0)
    assert off(batch) is batch


# ----------------------------------------------------------------------------- RNG


def _all_augs() -> dict[str, Callable[[Batch], Batch]]:
    reg = _registry()
    return {
        "flip": reg.get("flip")(p=0.5),
        "align": reg.get("align")(),
        "pose_warp": reg.get("pose_warp")(p=0.7),
        "photometric": reg.get("photometric")(p=0.5),
    }


def _run_isolated(aug: Callable[[Batch], Batch], batch: Batch, seed: int) -> Batch:
    # the engine's pattern: a forked, per-step seeded stream for augmentation only
    with torch.random.fork_rng(devices=[batch.images.device] if batch.images.is_cuda else []):
        torch.manual_seed(seed)
        return aug(batch)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["flip", "align", "pose_warp", "photometric"])
def test_reproducible_and_isolated_from_the_training_stream(device: str, name: str) -> None:
    aug = _all_augs()[name]
    batch = _batch(device, b=8)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(batch.images.device) if batch.images.is_cuda else None
    a = _run_isolated(aug, batch, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the training stream did not move
    if cuda_state is not None:
        assert torch.equal(torch.cuda.get_rng_state(batch.images.device), cuda_state)
    b = _run_isolated(aug, batch, seed=7)
    for field in ("images", "yaw", "pose_bin", "landmarks"):
        x, y = getattr(a, field), getattr(b, field)
        assert torch.equal(x.nan_to_num(-7), y.nan_to_num(-7)) if x.is_floating_point() else torch.equal(x, y)
    assert a.images.device == batch.images.device
    if name != "align":  # a different seed gives a different draw
        c = _run_isolated(aug, batch, seed=8)
        assert not torch.equal(a.images, c.images)
        # unforked, the same call would have advanced the training stream: why the fork exists
        aug(batch)
        assert not torch.equal(torch.get_rng_state(), state) or batch.images.is_cuda


@pytest.mark.parametrize("name", ["flip", "align", "pose_warp", "photometric"])
def test_without_landmarks_and_input_untouched(name: str) -> None:
    batch = attrs.evolve(_batch(b=4), landmarks=None)
    before = batch.images.clone()
    out = _all_augs()[name](batch)
    assert out.landmarks is None and out.images.shape == batch.images.shape
    assert torch.equal(batch.images, before)


def test_five_points_take_the_subjects_right_eye_first_on_the_image_left() -> None:
    from facedapt_plugins.datasets.synthetic import SyntheticFaces

    samples = SyntheticFaces("tiny").load()
    frontal = samples.landmarks[samples.yaw == 0]
    five = five_points(frontal)
    assert five.shape == (len(frontal), 5, 2)
    # 68-point 36-41 is the subject's right eye, which a frontal photo shows on the image left,
    # where the 5-point layout (and the ArcFace template) puts point 0; likewise the mouth corners.
    assert (five[:, 0, 0] < five[:, 1, 0]).all() and (five[:, 3, 0] < five[:, 4, 0]).all()
    assert TEMPLATE_5[0][0] < TEMPLATE_5[1][0] and TEMPLATE_5[3][0] < TEMPLATE_5[4][0]
    torch.testing.assert_close(five[:, 0], frontal[:, 36:42].mean(1))
    # Mirroring commutes with taking the five points when each layout swaps its own sides.
    mirrored = frontal.clone()
    mirrored[..., 0] = 32 - mirrored[..., 0]
    flipped5 = five.clone()
    flipped5[..., 0] = 32 - flipped5[..., 0]
    torch.testing.assert_close(five_points(mirrored[:, list(FLIP_PERM_68)]), flipped5[:, list(FLIP_PERM_5)])
    # Any leading shape; a 5-point set is already in the layout.
    assert five_points(frontal[None]).shape == (1, len(frontal), 5, 2) and five_points(five) is five
