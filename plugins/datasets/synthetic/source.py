"""SyntheticFaces: the DatasetSource that generates the built-in expression faces."""

from __future__ import annotations

import hashlib
import json
import math

import attrs
import torch

from facedapt.data.samples import EXPRESSIONS, Samples
from facedapt.errors import RecipeError

from . import randomness as rnd
from .expressions import (
    ACTION_UNITS,
    Style,
    activations,
    extreme_activations,
    sample_style,
)
from .face import albedo, build_template, capture_points, crop_template, face_shape, view_points
from .identity import Identity, extreme_shapes, sample_identity
from .landmarks import landmarks_3d
from .presets import SyntheticPreset, resolve
from .render import FRAME_CENTER_Y, FRAME_CENTER_Z, FRAME_UNITS, View, depth_scale, landmark_pixels, render_views, unrotate

#: Bump whenever the same parameters would produce different images.
#: 5: expression prototypes re-weighted, resting lids, shaded eye whites, skin-toned lips
#: (benchmarks/realism.py); 4: lifelike expressions; 3: light fixed in the world.
GENERATOR_VERSION = "synthetic-faces-5"
_NOISE_BANK = 1 << 20


@attrs.frozen
class Rendered:
    """What :meth:`SyntheticFaces.render` returns for the requested image indices."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    landmarks: torch.Tensor  # float32 [N, 68, 2] pixels
    visible: torch.Tensor  # bool [N, 68]: not hidden by the head itself and inside the frame


@attrs.frozen
class Layout:
    """Which capture and view each image is; captures are subject-major."""

    cap_subject: torch.Tensor  # [M]
    cap_expression: torch.Tensor  # [M] canonical index
    cap_intensity: torch.Tensor  # [M] in [0, 1]
    img_capture: torch.Tensor  # [N]
    img_view: torch.Tensor  # [N] index into views
    view_yaw: torch.Tensor  # [V] degrees
    view_pitch: torch.Tensor  # [V]


class SyntheticFaces:
    """Rendered 3D cartoon faces with exact expression, intensity, pose, subject and landmarks.

    Keyword arguments left at None take the preset's value. Everything is a pure function of
    (parameters, seed, image index).
    """

    name = "synthetic"

    def __init__(self, preset: str = "default", seed: int = 0, image_size: int | None = None, channels: int = 3,
                 num_subjects: int | None = None, style_strength: float | None = None,
                 yaw_range: float | None = None, lighting: float | None = None, noise: float | None = None,
                 jitter: float | None = None, background: float | None = None,
                 intensity_samples: int | None = None, expressions: list[str] | tuple[str, ...] | None = None,
                 yaw_step: float | None = None, pitches: list[float] | tuple[float, ...] | None = None,
                 light: str | None = None, batch_size: int = 1024) -> None:
        if channels not in (1, 3):
            raise RecipeError(f"synthetic dataset: channels must be 1 or 3, got {channels!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise RecipeError(f"synthetic dataset: seed must be a non-negative integer, got {seed!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise RecipeError(f"synthetic dataset: batch_size must be a positive integer, got {batch_size!r}")
        self.preset: SyntheticPreset = resolve(preset, dict(
            image_size=image_size, num_subjects=num_subjects, style_strength=style_strength, yaw_range=yaw_range,
            lighting=lighting, noise=noise, jitter=jitter, background=background,
            intensity_samples=intensity_samples, expressions=expressions, yaw_step=yaw_step, pitches=pitches,
            light=light))
        self.seed = seed
        self.channels = channels
        self.batch_size = batch_size

    # -- DatasetSource ---------------------------------------------------------------------------
    def fingerprint(self) -> str:
        params = attrs.asdict(self.preset)
        params.update(seed=self.seed, channels=self.channels, version=GENERATOR_VERSION)
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]

    def __len__(self) -> int:
        return self.preset.num_images

    def load(self) -> Samples:
        lay = self.layout()
        out = self.render()
        subject_ids = self.subject_ids
        cap = lay.img_capture
        names = [EXPRESSIONS[int(e)] for e in lay.cap_expression[cap]]
        yaws, pitches = lay.view_yaw[lay.img_view], lay.view_pitch[lay.img_view]
        paths = tuple(
            f"synthetic/{subject_ids[int(s)]}/{n}/c{int(c)}/yaw{int(y):+d}_pitch{int(p):+d}"
            for s, n, c, y, p in zip(lay.cap_subject[cap].tolist(), names, cap.tolist(), yaws.tolist(),
                                     pitches.tolist()))
        return Samples(images=out.images, expression=lay.cap_expression[cap].clone(),
                       subject=lay.cap_subject[cap].clone(), subject_ids=subject_ids, dataset=self.name,
                       yaw=yaws.clone(), pitch=pitches.clone(), capture=cap.clone(),
                       intensity=lay.cap_intensity[cap].clone(), landmarks=out.landmarks, paths=paths)

    # -- structure -------------------------------------------------------------------------------
    @property
    def subject_ids(self) -> tuple[str, ...]:
        return tuple(f"S{i + 1:03d}" for i in range(self.preset.num_subjects))

    def layout(self) -> Layout:
        p = self.preset
        per_expr = len(p.intensity_levels) or p.intensity_samples
        subj, expr, slot = [], [], []
        order = sorted(p.expressions, key=EXPRESSIONS.index)
        for s in range(p.num_subjects):
            for name in order:
                n = (p.neutral_captures or per_expr) if name == "neutral" else per_expr
                for j in range(n):
                    subj.append(s)
                    expr.append(EXPRESSIONS.index(name))
                    slot.append(j)
        cap_subject = torch.tensor(subj, dtype=torch.int64)
        cap_expression = torch.tensor(expr, dtype=torch.int64)
        ids = torch.arange(len(subj), dtype=torch.int64)
        if p.intensity_levels:
            levels = torch.tensor(p.intensity_levels, dtype=torch.float32)
            intensity = levels[torch.tensor(slot).clamp(max=len(levels) - 1)]
        else:
            u = rnd.uniform(self.seed, 31, ids, 1)[:, 0]
            intensity = p.intensity_min + (1.0 - p.intensity_min) * u
        intensity = torch.where(cap_expression == EXPRESSIONS.index("neutral"), torch.zeros_like(intensity),
                                intensity)
        yaws = torch.tensor(p.yaws, dtype=torch.float32)
        pitches = torch.tensor(p.pitches, dtype=torch.float32)
        view_pitch, view_yaw = (t.flatten() for t in torch.meshgrid(pitches, yaws, indexing="ij"))
        v = len(view_yaw)
        img_capture = ids.repeat_interleave(v)
        img_view = torch.arange(v).repeat(len(ids))
        return Layout(cap_subject, cap_expression, intensity, img_capture, img_view, view_yaw, view_pitch)

    # -- rendering -------------------------------------------------------------------------------
    def _views(self, index: torch.Tensor, lay: Layout) -> View:
        """Per-image camera/photometric parameters for image indices (computed for all at once)."""
        p, seed = self.preset, self.seed
        yaw = torch.deg2rad(lay.view_yaw[lay.img_view[index]].double())
        pitch = torch.deg2rad(lay.view_pitch[lay.img_view[index]].double())
        u = rnd.uniform(seed, 41, index, 12)
        size = p.image_size
        ch = self.channels
        grey = torch.full((len(index), ch), 0.5)
        c0 = u[:, 0:3] if ch == 3 else u[:, 0:1]
        c1 = u[:, 3:6] if ch == 3 else u[:, 3:4]
        a = 2 * math.pi * u[:, 6].double()
        lx, ly, lz = self._lights(lay)[lay.img_capture[index]].double().unbind(-1)
        if p.light == "world":  # one light per capture, fixed while the head turns
            lx, ly, lz = unrotate(lx, ly, lz, yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin())
        scale = 1 + 0.06 * p.jitter * (2 * u[:, 7] - 1)
        # Keep the face centred as the head turns: where the view puts the frame's centre point.
        k = size / FRAME_UNITS * scale.double()
        centre_x = FRAME_CENTER_Z * yaw.sin()
        centre_y = FRAME_CENTER_Y * pitch.cos() + FRAME_CENTER_Z * yaw.cos() * pitch.sin()
        return View(
            cos_yaw=yaw.cos().float(), sin_yaw=yaw.sin().float(), cos_pitch=pitch.cos().float(),
            sin_pitch=pitch.sin().float(),
            scale=scale,
            shift_x=(0.04 * size * p.jitter * (2 * u[:, 8] - 1) - k * centre_x).float(),
            shift_y=(0.04 * size * p.jitter * (2 * u[:, 9] - 1) + k * (centre_y - FRAME_CENTER_Y)).float(),
            bg_from=grey + p.background * (c0 - 0.5), bg_to=grey + p.background * (c1 - 0.5) * 0.6,
            bg_dir_x=a.cos().float(), bg_dir_y=a.sin().float(),
            gain=1 + 0.1 * p.lighting * (2 * u[:, 10] - 1),
            noise_offset=(rnd.hash_bits(seed, 42, index, 1)[:, 0] % (_NOISE_BANK - ch * size * size)),
            light_x=lx.float(), light_y=ly.float(), light_z=lz.float(),
        )

    def _lights(self, lay: Layout) -> torch.Tensor:
        """Unit light direction [M, 3] of every capture: in the world (camera frame at yaw 0)
        or in the head frame, per ``preset.light``; mostly frontal, from above."""
        p = self.preset
        ids = torch.arange(len(lay.cap_subject), dtype=torch.int64)
        lu = rnd.uniform(self.seed, 33, ids, 2)
        light = torch.stack([1.6 * p.lighting * (2 * lu[:, 0] - 1), 0.3 + 1.0 * p.lighting * (2 * lu[:, 1] - 1),
                             torch.ones(len(ids))], -1)
        return light / (light * light).sum(-1, keepdim=True).sqrt()

    def _captures(self, lay: Layout) -> tuple[Identity, Style, torch.Tensor]:
        """Identity and style of every subject; movements [M, A] of every capture."""
        p, seed = self.preset, self.seed
        subjects = torch.arange(p.num_subjects, dtype=torch.int64)
        ident = sample_identity(seed, subjects)
        style = sample_style(seed, subjects, p.style_strength)
        ids = torch.arange(len(lay.cap_subject), dtype=torch.int64)
        jitter = rnd.normal(seed, 32, ids, len(ACTION_UNITS))
        act = activations(style, lay.cap_subject, lay.cap_expression, lay.cap_intensity, jitter)
        return ident, style, act

    def render(self, indices: torch.Tensor | None = None, batch_size: int | None = None) -> Rendered:
        """Render images by index (all by default), ``batch_size`` images at a time."""
        p = self.preset
        lay = self.layout()
        n_img = len(lay.img_capture)
        index = torch.arange(n_img) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= n_img):
            raise IndexError(f"image index out of range 0..{n_img - 1}")
        views_all = self._views(torch.arange(n_img), lay)
        ident, style, act = self._captures(lay)
        size, ch = p.image_size, self.channels
        t = build_template(size)
        probe = capture_points(t, face_shape(extreme_shapes(), extreme_activations(), torch.zeros(4)))[0]
        px_per_unit = size / FRAME_UNITS * (1 + 0.06 * p.jitter)  # the largest jittered framing
        # Half the frame in head units at the smallest jittered scale and largest shift, plus 3 pixels.
        reach = ((0.5 + 0.04 * p.jitter) / (1 - 0.06 * p.jitter) + 3.0 / size) * FRAME_UNITS
        subsets = [view_points(t, probe, float(y), float(pt), px_per_unit, reach)
                   for y, pt in zip(lay.view_yaw, lay.view_pitch)]
        # Only the grid rows and columns some view shows are deformed and painted.
        used = torch.zeros(t.num_points, dtype=torch.bool)
        for keep in subsets:
            used[keep] = True
        t, new_index = crop_template(t, used)
        subsets = [new_index[keep] for keep in subsets]
        scales = [depth_scale(len(keep)) for keep in subsets]
        # Noise in output units with the rounding half folded in (one add per pixel later).
        noise = rnd.noise_bank(self.seed, _NOISE_BANK) * (0.04 * p.noise * 255.0) + 0.5
        images = torch.empty((len(index), ch, size, size), dtype=torch.uint8)
        lms = torch.empty((len(index), 68, 2))
        visible = torch.empty((len(index), 68), dtype=torch.bool)
        caps = lay.img_capture[index]
        img_view = lay.img_view[index]
        unique_caps = caps.unique()
        per_chunk = max(1, (batch_size or self.batch_size) // len(lay.view_yaw))
        aa = 0.5 * FRAME_UNITS / size
        luma = torch.tensor([[0.299], [0.587], [0.114]])
        for start in range(0, len(unique_caps), per_chunk):
            chunk = unique_caps[start:start + per_chunk]
            subj = lay.cap_subject[chunk]
            f = face_shape({k: v[subj] for k, v in ident.shape.items()}, act[chunk], style.asymmetry[subj])
            pos, normal = capture_points(t, f)
            color = albedo(t, f, ident.skin[subj], ident.hair[subj], ident.iris[subj],
                           ident.hairline[subj], ident.hair_length[subj], aa)
            if ch == 1:
                color = color @ luma
            lm3 = landmarks_3d(f)
            local = torch.full((int(chunk.max()) + 1,), -1, dtype=torch.int64)
            local[chunk] = torch.arange(len(chunk))
            rows = torch.nonzero(torch.isin(caps, chunk)).flatten()
            for v in img_view[rows].unique().tolist():
                sel = rows[img_view[rows] == v]
                sel = sel[torch.argsort(local[caps[sel]], stable=True)]
                owner = local[caps[sel]]
                keep = subsets[v]
                whole = len(owner) == len(chunk) and bool((owner == torch.arange(len(chunk))).all())
                plane = pos if whole else pos[:, owner]  # a subset, or repeated indices
                x, y, z = (axis.index_select(1, keep) for axis in plane)  # per plane: 3x faster than on [3, M, Np]
                view = _take(views_all, index[sel])
                img, depth = render_views(x, y, z, keep, color, normal, owner, view, size, noise, scales[v])
                xy, vis = landmark_pixels(lm3[owner], view, size, depth, scales[v])
                images[sel], lms[sel], visible[sel] = img, xy, vis
        return Rendered(images=images, landmarks=lms, visible=visible)


def _take(v: View, index: torch.Tensor) -> View:
    return View(**{f.name: getattr(v, f.name)[index] for f in attrs.fields(View)})
