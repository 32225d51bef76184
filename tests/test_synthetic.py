"""The built-in synthetic faces: labels, determinism, pose geometry, occlusion, style, errors."""

from __future__ import annotations

import pytest
import torch
from facedapt_plugins.datasets import synthetic
from facedapt_plugins.datasets.synthetic import SyntheticFaces
from facedapt_plugins.landmarks import five_points

from facedapt.data.samples import EXPRESSIONS, Samples
from facedapt.errors import RecipeError
from facedapt.registry import Registry

CLEAN = dict(noise=0.0, jitter=0.0, lighting=0.0, background=0.0)  # photometric nuisances off


@pytest.fixture(scope="module")
def tiny() -> Samples:
    return SyntheticFaces("tiny").load()


@pytest.fixture(scope="module")
def posed() -> tuple[SyntheticFaces, object]:
    """Clean, style-free faces every 30 degrees, so geometry can be checked."""
    ds = SyntheticFaces("tiny", image_size=48, num_subjects=2, style_strength=0.0, yaw_step=30.0,
                        expressions=("neutral", "happy"), **CLEAN)
    return ds, ds.render()


def test_registers_as_synthetic() -> None:
    reg = Registry("datasets")
    synthetic.facedapt_register_datasets(reg)
    assert reg.get("synthetic") is SyntheticFaces


def test_tiny_shapes_and_labels(tiny: Samples) -> None:
    n = 6 * 7 * 5
    assert len(tiny) == n
    assert tiny.images.shape == (n, 3, 32, 32) and tiny.images.dtype == torch.uint8
    assert tiny.landmarks.shape == (n, 68, 2) and tiny.landmarks.dtype == torch.float32
    assert tiny.subject_ids == ("S001", "S002", "S003", "S004", "S005", "S006")
    assert set(tiny.expression.tolist()) == set(range(7))
    assert sorted(set(tiny.yaw.tolist())) == [-90.0, -45.0, 0.0, 45.0, 90.0]
    assert (tiny.pitch == 0).all()
    assert ((tiny.intensity >= 0) & (tiny.intensity <= 1)).all()
    neutral = tiny.expression == EXPRESSIONS.index("neutral")
    assert (tiny.intensity[neutral] == 0).all() and (tiny.intensity[~neutral] >= 0.4).all()
    inside = ((tiny.landmarks >= 0) & (tiny.landmarks < 32)).all(-1)
    assert inside.float().mean() > 0.95
    assert five_points(tiny.landmarks).shape == (n, 5, 2)
    assert tiny.images.float().std() > 20  # not blank
    assert len(set(tiny.paths)) == n


def test_capture_ids_group_one_moment_across_poses(tiny: Samples) -> None:
    caps = tiny.capture.unique()
    assert len(caps) == 6 * 7
    for c in caps.tolist():
        idx = torch.nonzero(tiny.capture == c).flatten()
        assert len(tiny.subject[idx].unique()) == 1 and len(tiny.expression[idx].unique()) == 1
        assert len(tiny.intensity[idx].unique()) == 1
        assert sorted(tiny.yaw[idx].tolist()) == [-90.0, -45.0, 0.0, 45.0, 90.0]


def test_same_seed_is_bit_identical_whatever_the_batch_size() -> None:
    a = SyntheticFaces("tiny", seed=3).render()
    b = SyntheticFaces("tiny", seed=3, batch_size=7).render()
    assert torch.equal(a.images, b.images) and torch.equal(a.landmarks, b.landmarks)
    some = torch.tensor([5, 77, 150])
    c = SyntheticFaces("tiny", seed=3).render(some)
    assert torch.equal(c.images, a.images[some])


def test_different_seeds_differ() -> None:
    a = SyntheticFaces("tiny", seed=0, num_subjects=2).render(torch.arange(10))
    b = SyntheticFaces("tiny", seed=1, num_subjects=2).render(torch.arange(10))
    assert (a.images.float() - b.images.float()).abs().mean() > 5


def _flip_error(img: torch.Tensor) -> float:
    x = img.float()
    return float((x - x.flip(-1)).abs().mean())


def test_frontal_is_symmetric_and_turned_face_is_not(posed) -> None:
    ds, out = posed
    lay = ds.layout()
    yaw = lay.view_yaw[lay.img_view]
    neutral = lay.cap_expression[lay.img_capture] == 0
    front = out.images[(yaw == 0) & neutral]
    turned = out.images[(yaw == 60) & neutral]
    assert max(_flip_error(i) for i in front) < 0.5 * min(_flip_error(i) for i in turned)


def test_yaw_sign_convention(posed) -> None:
    """Positive yaw turns the face toward the viewer's right: the nose moves to the image's right."""
    ds, out = posed
    lay = ds.layout()
    yaw = lay.view_yaw[lay.img_view]
    lm = out.landmarks
    right_eye, left_eye, nose = lm[:, 36:42, 0].mean(1), lm[:, 42:48, 0].mean(1), lm[:, 30, 0]
    pos, neg = yaw == 60, yaw == -60
    # The visible (right) eye lies further from the nose than the far one, and the nose is right of both.
    assert ((nose - right_eye)[pos] > (left_eye - nose)[pos].abs()).all()
    assert (nose[pos] > left_eye[pos]).all()
    assert ((left_eye - nose)[neg] > (nose - right_eye)[neg].abs()).all()
    assert (nose[neg] < right_eye[neg]).all()
    # Frontal: subject's right eye (36-41) on the image's left.
    assert (right_eye[yaw == 0] < left_eye[yaw == 0]).all()
    frontal_nose = nose[yaw == 0].mean()
    assert nose[yaw == 30].mean() > frontal_nose > nose[yaw == -30].mean()


def test_flipped_positive_yaw_looks_like_negative_yaw(posed) -> None:
    """A horizontal flip negates yaw (as the flip augmentation and pose_warp assume)."""
    ds, out = posed
    lay = ds.layout()
    yaw = lay.view_yaw[lay.img_view]
    size = ds.preset.image_size
    for cap in lay.img_capture.unique().tolist():
        mine = lay.img_capture == cap
        plus = out.images[mine & (yaw == 30)][0].float()
        minus = out.images[mine & (yaw == -30)][0].float()
        flipped = plus.flip(-1)
        to_minus, to_plus = (flipped - minus).abs().mean(), (flipped - plus).abs().mean()
        assert to_minus < 0.5 * to_plus, (cap, float(to_minus), float(to_plus))
        # Landmarks agree too: the mirrored nose tip lands where the -30 render has it.
        nose_plus = out.landmarks[mine & (yaw == 30)][0, 30]
        nose_minus = out.landmarks[mine & (yaw == -30)][0, 30]
        assert abs(float(size - nose_plus[0] - nose_minus[0])) < 0.5
        assert abs(float(nose_plus[1] - nose_minus[1])) < 0.5


def test_profiles_hide_the_far_half(posed) -> None:
    ds, out = posed
    lay = ds.layout()
    yaw = lay.view_yaw[lay.img_view]
    vis = out.visible
    right, left = slice(36, 42), slice(42, 48)
    assert vis[yaw == 0][:, 36:48].all()
    # +90 shows the subject's right side (the nose points to the image's right edge).
    assert not vis[yaw == 90][:, left].any() and vis[yaw == 90][:, right].float().mean() > 0.4
    assert not vis[yaw == -90][:, right].any() and vis[yaw == -90][:, left].float().mean() > 0.4
    # The far mouth corner disappears too (a 2D shear would keep it).
    assert not vis[yaw == 90][:, 54].any() and not vis[yaw == -90][:, 48].any()


def test_personal_style_changes_how_an_expression_looks() -> None:
    """Happy-minus-own-neutral landmark motion varies across subjects much more with style on."""
    def spread(strength: float) -> float:
        ds = SyntheticFaces("tiny", image_size=64, num_subjects=8, style_strength=strength, yaw_range=0.0,
                            expressions=("neutral", "happy", "surprise"), **CLEAN)
        out, lay = ds.render(), ds.layout()
        exp, inten = lay.cap_expression[lay.img_capture], lay.cap_intensity[lay.img_capture]
        motion = []
        for e in (1, 3):
            d = (out.landmarks[exp == e] - out.landmarks[exp == 0]) / inten[exp == e][:, None, None]
            motion.append(d.flatten(1))
        m = torch.cat(motion, 1)
        return float(m.std(0).mean() / m.abs().mean())

    assert spread(1.0) > 2.0 * spread(0.0)


def test_fingerprint_names_the_content() -> None:
    a = SyntheticFaces("tiny").fingerprint()
    assert a == SyntheticFaces("tiny").fingerprint()
    assert a != SyntheticFaces("tiny", seed=1).fingerprint()
    assert a != SyntheticFaces("tiny", style_strength=0.5).fingerprint()
    assert a != SyntheticFaces("tiny", channels=1).fingerprint()


def test_grayscale_and_presets_sizes() -> None:
    out = SyntheticFaces("tiny", channels=1, num_subjects=2).render(torch.arange(3))
    assert out.images.shape == (3, 1, 32, 32)
    assert len(SyntheticFaces("default")) == 36 * 7 * 2 * 13
    assert len(SyntheticFaces("bu3dfe")) == 50 * (6 * 4 + 1) * 7
    mp = SyntheticFaces("multipie")
    assert len(mp.preset.yaws) == 13 and len(mp.preset.expressions) == 4


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(RecipeError, match="default.*tiny.*multipie.*bu3dfe"):
        SyntheticFaces("huge")


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"num_subjects": 1}, "num_subjects"),
    ({"image_size": 8}, "image_size"),
    ({"style_strength": -1.0}, "style_strength"),
    ({"yaw_range": 120.0}, "yaw_range"),
    ({"noise": -0.1}, "noise"),
    ({"channels": 2}, "channels"),
    ({"expressions": ("happy", "contempt")}, "expressions"),
])
def test_bad_dials_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(RecipeError, match=name):
        SyntheticFaces("tiny", **kwargs)


def _front_brightness(light: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per capture: the mean pixel value (gain divided out) at the midline of the lips (landmarks
    51 and 57, where the renderer projects them) at yaw +60 and at -60, and the capture's light
    direction x (toward the image's right).

    The lips' midline is front-facing and smooth at the scale of a pixel, so the pixel over it
    shows the same surface, facing the same way, in both turns. The nose ridge does not do: it is
    narrower than a pixel, so at +-60 the pixel over it shows the nose's near flank, the right one
    in one turn and the left one in the other, which a side light shades differently even when it
    turns with the head."""
    ds = SyntheticFaces("tiny", image_size=64, num_subjects=4, yaw_step=30.0, style_strength=0.0, lighting=1.0,
                        noise=0.0, jitter=0.0, background=0.0, light=light)
    lay, out = ds.layout(), ds.render()
    gain = ds._views(torch.arange(len(lay.img_capture)), lay).gain
    yaw = lay.view_yaw[lay.img_view]
    front = [51, 57]

    def midline(at: float) -> torch.Tensor:
        sel = torch.nonzero(yaw == at).flatten()
        assert out.visible[sel][:, front].all()
        px = out.landmarks[sel][:, front].floor().long()
        assert ((px >= 0) & (px < 64)).all()
        img = out.images[sel].float().mean(1)
        values = img[torch.arange(len(sel))[:, None], px[..., 1], px[..., 0]]
        return values.mean(1) / gain[sel]

    return midline(60.0), midline(-60.0), ds._lights(lay)[:, 0]


def test_light_is_fixed_in_the_world() -> None:
    """A face turned toward the light is lit on its front; turned away, its front darkens. With
    the light in the head frame (light: head) both turns shade the front alike."""
    plus, minus, light_x = _front_brightness("world")
    side = light_x.abs() > 0.3
    toward = torch.where(light_x > 0, plus, minus)[side]
    away = torch.where(light_x > 0, minus, plus)[side]
    assert side.sum() >= 5 and (toward > away + 10).all(), (toward, away)
    plus_h, minus_h, _ = _front_brightness("head")
    assert (plus_h - minus_h).abs()[side].mean() < 0.25 * (toward - away).mean()


def test_frontal_views_do_not_depend_on_the_light_frame() -> None:
    world = SyntheticFaces("tiny", num_subjects=2).render()
    head = SyntheticFaces("tiny", num_subjects=2, light="head").render()
    lay = SyntheticFaces("tiny", num_subjects=2).layout()
    front = lay.view_yaw[lay.img_view] == 0
    assert torch.equal(world.images[front], head.images[front])
    assert not torch.equal(world.images[~front], head.images[~front])
    assert SyntheticFaces("tiny").fingerprint() != SyntheticFaces("tiny", light="head").fingerprint()
    with pytest.raises(RecipeError, match="light must be world or head, got 'sun'"):
        SyntheticFaces("tiny", light="sun")


def test_mouth_opens_dark_for_surprise() -> None:
    """Frontal, style-free faces: surprise drops the jaw into a dark mouth cavity, many more dark
    pixels in the mouth box than the closed neutral mouth (whose lips meet in a thin dark line)."""
    ds = SyntheticFaces("tiny", image_size=64, num_subjects=4, style_strength=0.0, yaw_range=0.0,
                        expressions=("neutral", "surprise"), **CLEAN)
    out, lay = ds.render(), ds.layout()
    expr = lay.cap_expression[lay.img_capture]
    gray = out.images.float().mean(1)
    lm = out.landmarks
    dark = []
    for i in range(len(gray)):  # the box spanned by the mouth corners, 4 px above and below the lips
        x0, x1 = int(lm[i, 48, 0]), int(lm[i, 54, 0]) + 1
        y0, y1 = int(lm[i, 48:60, 1].min()) - 4, int(lm[i, 48:60, 1].max()) + 5
        skin = gray[i, y0 - 8:y0 - 4, x0:x1].median()  # skin between the nose and the upper lip
        dark.append(float((gray[i, y0:y1, x0:x1] < 0.45 * skin).sum()))
    dark_t = torch.tensor(dark)
    neutral, surprise = expr == EXPRESSIONS.index("neutral"), expr == EXPRESSIONS.index("surprise")
    assert dark_t[surprise].min() > 2 * dark_t[neutral].max() + 10, (dark_t[surprise], dark_t[neutral])
