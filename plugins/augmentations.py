"""On-device batch augmentations: flip, align, pose_warp, photometric.

Each registered factory takes keyword arguments (what a recipe passes) and returns a callable
``aug(batch) -> batch`` that transforms a :class:`facedapt.method.Batch` whose images are
float ``[B, C, H, W]`` in [-1, 1] on any device. Labels follow the images: ``yaw`` (degrees,
NaN unknown), ``pose_bin`` (recomputed from the new yaw where it is known) and ``landmarks``
(``[B, K, 2]`` pixel x, y; pixel centres at integer coordinates, so a flip maps x to W-1-x).
The input batch is never modified; other fields (expression, subject...) pass through
untouched. A cross-pose ``partner`` batch (one partner per sample) follows the geometry of its
anchor: ``flip`` mirrors it where it mirrors the anchor, ``align`` aligns it too; ``pose_warp``
and ``photometric`` leave it as it is (its own view is the reconstruction goal).

Randomness comes only from torch's global generator (``torch.rand`` here, Kornia's samplers
inside ``photometric``): the engine wraps a call in ``torch.random.fork_rng`` seeded per step,
so augmenting neither shifts the training stream nor depends on it. Everything is batched and
stays on the images' device; samples not chosen (p) come back bit-identical.

Yaw sign: positive yaw is a face turned toward the viewer's right (facedapt.data.samples), so
its nose points to the image right. ``pose_warp`` with a positive delta therefore moves the
parts of the face nearest the camera (nose, lips) toward larger x, as the landmarks do.
(A face turned that way shows the camera its right cheek, not the left one the note in
samples.py mentions; ``YAW_IMAGE_SIGN`` is the one place to change should the datasets follow
the cheek wording. The flip is the same under either reading.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import attrs
import kornia.augmentation as KA
import torch
from kornia.geometry.transform import remap, warp_affine
from torch import nn

from facedapt import hookimpl
from facedapt.data import NUM_POSE_BINS, yaw_to_bin
from facedapt.method import Batch

from .landmarks import FLIP_PERMS, TEMPLATE_5, five_points, flip_permutation

_PADDING_MODES = ("zeros", "border", "reflection")

#: +1: positive yaw moves the nose toward the image right (see the module docstring).
YAW_IMAGE_SIGN = 1.0


def _probability(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # Sampling grids and Kornia's kernels want float32 or float64; half images round-trip.
    return dtype if dtype == torch.float64 else torch.float32


def _chosen(batch_size: int, p: float, device: torch.device) -> torch.Tensor:
    return torch.rand(batch_size, device=device) < p


@functools.lru_cache(maxsize=64)
def _index(perm: tuple[int, ...], device: torch.device) -> torch.Tensor:
    # Cached: a constant uploaded once per device rather than on every step.
    return torch.as_tensor(perm, dtype=torch.long, device=device)


# ----------------------------------------------------------------------------- flip


@attrs.define
class Flip:
    """Symmetric horizontal flip of each sample with probability ``p``.

    Images are mirrored, yaw negated, pose bins mapped b -> 12 - b (recomputed from yaw where
    yaw is known, which agrees: rounding is symmetric), landmark x -> W-1-x and left/right
    points swapped by the layout's table. Two flips give the input back; landmark coordinates
    come back bit-exact whenever W-1-x is exact in float (e.g. any multiple of 1/1024 for
    images up to 1024 px), otherwise within one rounding step.
    """

    p: float = attrs.field(default=0.5, validator=_probability)
    #: Left/right table for a layout other than 68 or 5 points (see plugins/landmarks.py).
    permutation: tuple[int, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )

    def __attrs_post_init__(self) -> None:
        if self.permutation is not None and sorted(self.permutation) != list(range(len(self.permutation))):
            raise ValueError("permutation must be a permutation of 0..K-1")

    def __call__(self, batch: Batch) -> Batch:
        chosen = _chosen(batch.images.shape[0], self.p, batch.images.device)
        out = self._flip(batch, chosen)
        if batch.partner is not None:
            # A cross-pose partner is decoded from its anchor's expression features: it must be
            # mirrored with its anchor, or the pair shows two different faces.
            out = attrs.evolve(out, partner=self._flip(batch.partner, chosen))
        return out

    def _flip(self, batch: Batch, chosen: torch.Tensor) -> Batch:
        images = batch.images
        b, width = images.shape[0], images.shape[-1]
        out = {"images": torch.where(chosen.view(b, 1, 1, 1), images.flip(-1), images)}

        if batch.yaw is not None:
            out["yaw"] = torch.where(chosen, -batch.yaw, batch.yaw)
        if batch.pose_bin is not None:
            bins = batch.pose_bin
            mirrored = torch.where(bins >= 0, NUM_POSE_BINS - 1 - bins, bins)
            if batch.yaw is not None:
                new_yaw = out["yaw"]
                mirrored = torch.where(torch.isnan(new_yaw), mirrored, yaw_to_bin(new_yaw).to(bins.dtype))
            out["pose_bin"] = torch.where(chosen, mirrored, bins)
        if batch.landmarks is not None:
            lm = batch.landmarks
            perm = self.permutation if self.permutation is not None else flip_permutation(lm.shape[1])
            if len(perm) != lm.shape[1]:
                raise ValueError(f"flip permutation has {len(perm)} entries for {lm.shape[1]} landmarks")
            swapped = lm.index_select(1, _index(tuple(perm), lm.device))
            mirrored_lm = torch.stack([(width - 1) - swapped[..., 0], swapped[..., 1]], dim=-1)
            out["landmarks"] = torch.where(chosen.view(b, 1, 1), mirrored_lm, lm)
        return attrs.evolve(batch, **out)


# ----------------------------------------------------------------------------- align


def _similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst, [B, 2, 3].

    Closed form: with centred points s, d the optimal [[a, -b], [b, a]] has
    a = sum(s . d) / sum(|s|^2) and b = sum(s x d) / sum(|s|^2).
    """
    ms, md = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    s, d = src - ms, dst - md
    var = (s * s).sum(dim=(1, 2)).clamp_min(1e-12)
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(dim=1) / var
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1) / var
    rot = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=1)  # [B, 2, 2]
    t = md.squeeze(1) - (rot @ ms.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([rot, t.unsqueeze(-1)], dim=-1)


@functools.lru_cache(maxsize=64)
def _template_pixels(template: tuple[tuple[float, float], ...], zoom: float, height: int, width: int,
                     device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    cx, cy = (width - 1) / 2, (height - 1) / 2
    points = [(cx + (x * width - cx) * zoom, cy + (y * height - cy) * zoom) for x, y in template]
    return torch.tensor(points, device=device, dtype=dtype)


def _apply_affine(points: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return points @ m[:, :, :2].transpose(1, 2) + m[:, :, 2].unsqueeze(1)


@attrs.define
class Align:
    """Similarity warp of each face onto a canonical 5-point template (deterministic).

    The transform is the least-squares fit from the sample's eye centres, nose tip and mouth
    corners (derived from 68 points when K == 68) to the template placed in the output image;
    all K landmarks are carried along. Samples without usable landmarks (any of the five
    NaN) are left unchanged, or only resized when ``size`` differs from the input.
    """

    #: Output (H, W); None keeps the input size.
    size: tuple[int, int] | None = attrs.field(
        default=None, converter=attrs.converters.optional(lambda s: (s, s) if isinstance(s, int) else tuple(s))
    )
    #: Five (x, y) points as fractions of the output width and height; default ArcFace's.
    template: tuple[tuple[float, float], ...] = attrs.field(
        default=TEMPLATE_5, converter=lambda t: tuple(tuple(float(v) for v in p) for p in t)
    )
    #: Scales the template about the image centre (< 1 keeps more context around the face).
    zoom: float = attrs.field(default=1.0)
    padding_mode: str = attrs.field(default="zeros", validator=attrs.validators.in_(_PADDING_MODES))

    def __attrs_post_init__(self) -> None:
        if len(self.template) != 5 or any(len(p) != 2 for p in self.template):
            raise ValueError("template must hold five (x, y) points")
        if self.zoom <= 0:
            raise ValueError(f"zoom must be > 0, got {self.zoom}")

    def template_pixels(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The template in output pixel coordinates, [5, 2]."""
        return _template_pixels(self.template, self.zoom, height, width, device, dtype)

    def __call__(self, batch: Batch) -> Batch:
        out = self._align(batch)
        if batch.partner is not None:  # partners are encoded and decoded like their anchors
            out = attrs.evolve(out, partner=self._align(batch.partner))
        return out

    def _align(self, batch: Batch) -> Batch:
        images = batch.images
        b, _, h_in, w_in = images.shape
        h_out, w_out = self.size if self.size is not None else (h_in, w_in)
        same_size = (h_out, w_out) == (h_in, w_in)
        if batch.landmarks is None and same_size:
            return batch
        dev, dtype = images.device, _work_dtype(images.dtype)

        # Samples without landmarks get a plain resize (the identity at the same size);
        # align_corners=True maps pixel 0 to 0 and pixel W-1 to W_out-1.
        resize = torch.zeros(b, 2, 3, device=dev, dtype=dtype)
        resize[:, 0, 0] = (w_out - 1) / max(w_in - 1, 1)
        resize[:, 1, 1] = (h_out - 1) / max(h_in - 1, 1)
        if batch.landmarks is None:
            m, valid = resize, torch.zeros(b, dtype=torch.bool, device=dev)
        else:
            src = five_points(batch.landmarks.to(dtype))
            valid = torch.isfinite(src).all(dim=2).all(dim=1)
            src = torch.where(valid.view(b, 1, 1), src, torch.zeros_like(src))
            dst = self.template_pixels(h_out, w_out, dev, dtype).expand(b, 5, 2)
            m = torch.where(valid.view(b, 1, 1), _similarity(src, dst), resize)

        warped = warp_affine(images.to(dtype), m, (h_out, w_out), padding_mode=self.padding_mode, align_corners=True)
        warped = warped.to(images.dtype)
        if same_size:
            warped = torch.where(valid.view(b, 1, 1, 1), warped, images)
        out: dict[str, Any] = {"images": warped}
        if batch.landmarks is not None:
            lm = batch.landmarks
            moved = _apply_affine(lm.to(dtype), m).to(lm.dtype)
            out["landmarks"] = torch.where(valid.view(b, 1, 1), moved, lm) if same_size else moved
        return attrs.evolve(batch, **out)


# ----------------------------------------------------------------------------- pose warp

#: Depth template: z = D (1 - r^2)^1.5 inside the face ellipse, 0 outside. Like an
#: ellipsoid near the centre but with zero slope at the rim, so the face blends into the
#: backdrop without a seam. Its steepest x-slope is 1.5 D / rx (at u = 1/sqrt(2)).
_MAX_SLOPE = 1.5


@attrs.define
class PoseWarp:
    """Re-render each face at a nearby yaw with a depth-aware warp.

    Model: an orthographic camera looks along -z at a mean face depth template (a smooth
    ellipsoid-like bump of height ``depth * rx`` over the face ellipse, centred from the
    landmarks where present, else on the image). The scene is rotated by delta yaw about the
    vertical axis through the face centre at the rim's depth:

        x' = cx + (x - cx) cos(delta) + z(x, y) sin(delta),    y' = y.

    With delta > 0 the nose (largest z) moves toward larger x: the face turns toward the
    viewer's right, matching positive yaw. Landmarks take this forward map; the image is
    sampled with the backward map, found per pixel by fixed-point iteration
    x <- cx + (x' - cx - z(x, y) sin(delta)) / cos(delta), which contracts because
    |dz/dx| tan(delta) < 1 (``max_degrees`` is checked against it, about 38 degrees at the
    default depth: the map then never folds, so no occlusion handling is needed).

    Samples whose yaw is unknown (NaN, or ``yaw`` None for the whole batch) are left
    unchanged: the warp exists to move a labelled pose toward poses the target shows, and
    without a yaw the new label would be unknown too, the ±90 clamp cannot be applied, and
    a profile face (for which the frontal template is wrong) cannot be told apart.
    Deltas are drawn uniformly in magnitude from [min_degrees, max_degrees] with a random
    sign, then clamped so the new yaw stays in [-90, 90].
    """

    max_degrees: float = attrs.field(default=15.0, validator=_non_negative)
    p: float = attrs.field(default=1.0, validator=_probability)
    min_degrees: float = attrs.field(default=0.0, validator=_non_negative)
    #: Template depth at the face centre as a fraction of the face half-width.
    depth: float = attrs.field(default=0.75, validator=_non_negative)
    #: Fixed-point steps of the backward map; the error shrinks by L = max|dz/dx| tan(delta)
    #: per step, so None picks enough for L^n < 1e-4 at max_degrees (8 at 15 degrees).
    iterations: int | None = None
    padding_mode: str = attrs.field(default="border", validator=attrs.validators.in_(_PADDING_MODES))

    def __attrs_post_init__(self) -> None:
        if self.min_degrees > self.max_degrees:
            raise ValueError(f"min_degrees ({self.min_degrees}) exceeds max_degrees ({self.max_degrees})")
        # The map folds (and the backward iteration diverges) at max|dz/dx| tan(delta) = 1;
        # keep a margin so the iteration converges in a reasonable number of steps.
        limit = math.degrees(math.atan(0.9 / (_MAX_SLOPE * self.depth))) if self.depth > 0 else 90.0
        if self.max_degrees > limit:
            raise ValueError(
                f"max_degrees={self.max_degrees} comes too close to folding the depth template "
                f"(depth={self.depth}); keep it at most {limit:.2f}"
            )
        if self.iterations is None:
            contraction = _MAX_SLOPE * self.depth * math.tan(math.radians(self.max_degrees))
            self.iterations = 1 if contraction <= 1e-4 else max(2, math.ceil(math.log(1e-4) / math.log(contraction)))
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")

    def face_region(self, batch: Batch, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Per-sample face ellipse (cx, cy, rx, ry) in pixels, each [B]."""
        images = batch.images
        b, _, h, w = images.shape
        dev = images.device
        # No landmarks: a face crop roughly filling the image.
        cx = torch.full((b,), (w - 1) / 2, device=dev, dtype=dtype)
        cy = torch.full((b,), (h - 1) / 2, device=dev, dtype=dtype)
        rx = torch.full((b,), 0.4 * w, device=dev, dtype=dtype)
        ry = torch.full((b,), 0.5 * h, device=dev, dtype=dtype)
        lm = batch.landmarks
        if lm is None or lm.shape[1] not in FLIP_PERMS:
            return cx, cy, rx, ry
        five = five_points(lm.to(dtype))
        eyes = (five[:, 0] + five[:, 1]) / 2
        mouth = (five[:, 3] + five[:, 4]) / 2
        # Eye-to-mouth distance barely changes with yaw, unlike the eye distance; the
        # proportions fit the ArcFace template (face ~2.2 x 2.7 eye-mouth distances).
        span = (mouth - eyes).norm(dim=-1)
        centre = eyes + 0.4 * (mouth - eyes)
        ok = torch.isfinite(five).all(dim=2).all(dim=1) & (span > 1.0)
        cx = torch.where(ok, centre[:, 0], cx)
        cy = torch.where(ok, centre[:, 1], cy)
        rx = torch.where(ok, 1.1 * span, rx)
        ry = torch.where(ok, 1.35 * span, ry)
        return cx, cy, rx, ry

    @staticmethod
    def _depth(x: torch.Tensor, y: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
               rx: torch.Tensor, ry: torch.Tensor, height: torch.Tensor) -> torch.Tensor:
        t = (1.0 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2).clamp_min(0.0)
        return height * t * t.sqrt()  # t^1.5, as in the backward loop

    def __call__(self, batch: Batch) -> Batch:
        if batch.yaw is None:
            return batch
        images = batch.images
        b, _, h, w = images.shape
        dev, dtype = images.device, _work_dtype(images.dtype)

        yaw = batch.yaw
        known = ~torch.isnan(yaw)
        magnitude = self.min_degrees + (self.max_degrees - self.min_degrees) * torch.rand(b, device=dev)
        sign = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
        chosen = _chosen(b, self.p, dev) & known
        wanted = torch.where(chosen, sign * magnitude, torch.zeros_like(magnitude)).to(yaw.dtype)
        new_yaw = torch.where(known, (yaw + wanted).clamp(-90.0, 90.0), yaw)
        delta = torch.where(known, new_yaw - yaw, torch.zeros_like(yaw))
        moved = delta != 0

        rad = torch.deg2rad(delta.to(dtype)) * YAW_IMAGE_SIGN
        cos, sin = torch.cos(rad), torch.sin(rad)
        cx, cy, rx, ry = self.face_region(batch, dtype)
        height = self.depth * rx

        # Backward map: for every output pixel, the source x whose forward image lands there,
        # x <- cx + (x' - cx) / cos - z(x, y) tan. The row term of r^2 and everything but z are
        # loop invariants (this loop dominates the cost).
        cx3, cy3, rx3, ry3, d3 = (t.view(b, 1, 1) for t in (cx, cy, rx, ry, height))
        xs = torch.arange(w, device=dev, dtype=dtype).view(1, 1, w)
        ys = torch.arange(h, device=dev, dtype=dtype).view(1, h, 1)
        row = 1.0 - ((ys - cy3) / ry3) ** 2  # [B, H, 1]
        start = cx3 + (xs - cx3) / cos.view(b, 1, 1)  # [B, 1, W]
        d_tan = d3 * torch.tan(rad).view(b, 1, 1)
        inv_rx = 1.0 / rx3
        src_x = start.expand(b, h, w)
        for _ in range(self.iterations):
            t = (row - ((src_x - cx3) * inv_rx).square()).clamp_min_(0.0)
            src_x = start - d_tan * t * t.sqrt()  # z / D = t^1.5
        warped = remap(images.to(dtype), src_x, ys.expand(b, h, w), mode="bilinear",
                       padding_mode=self.padding_mode, align_corners=True).to(images.dtype)
        out: dict[str, Any] = {
            "images": torch.where(moved.view(b, 1, 1, 1), warped, images),
            "yaw": torch.where(moved, new_yaw, yaw),
        }
        if batch.pose_bin is not None:
            out["pose_bin"] = torch.where(moved, yaw_to_bin(new_yaw).to(batch.pose_bin.dtype), batch.pose_bin)
        if batch.landmarks is not None:
            lm = batch.landmarks
            x, y = lm[..., 0].to(dtype), lm[..., 1].to(dtype)
            cx2, cy2, rx2, ry2, d2, cos2, sin2 = (t.view(b, 1) for t in (cx, cy, rx, ry, height, cos, sin))
            z = self._depth(x, y, cx2, cy2, rx2, ry2, d2)
            new_x = cx2 + (x - cx2) * cos2 + z * sin2
            new_lm = torch.stack([new_x, y], dim=-1).to(lm.dtype)
            out["landmarks"] = torch.where(moved.view(b, 1, 1), new_lm, lm)
        return attrs.evolve(batch, **out)


# ----------------------------------------------------------------------------- photometric


@attrs.define
class Photometric:
    """Brightness, contrast, gamma, Gaussian noise and Gaussian blur (Kornia), labels untouched.

    Applied in [0, 1] space (what Kornia's intensity ops assume) and mapped back to [-1, 1].
    A strength of 0 leaves that operation out; each operation is drawn per sample with its
    own probability, ``p`` where its ``*_p`` is not given. Hue is left out on purpose (slow,
    and colour casts are not what separates the domains here).
    """

    p: float = attrs.field(default=0.5, validator=_probability)
    #: Additive shift drawn from [-brightness, brightness] (image range 1).
    brightness: float = attrs.field(default=0.2, validator=_non_negative)
    brightness_p: float | None = None
    #: Contrast factor drawn from [1 - contrast, 1 + contrast].
    contrast: float = attrs.field(default=0.2, validator=_non_negative)
    contrast_p: float | None = None
    #: Gamma drawn from [1 - gamma, 1 + gamma] (gamma < 1).
    gamma: float = attrs.field(default=0.2, validator=_non_negative)
    gamma_p: float | None = None
    #: Noise standard deviation (image range 1).
    noise: float = attrs.field(default=0.02, validator=_non_negative)
    noise_p: float | None = None
    #: Largest blur sigma in pixels (drawn from [0.1, blur]).
    blur: float = attrs.field(default=1.0, validator=_non_negative)
    blur_p: float | None = None
    #: Odd blur kernel size; None derives it from ``blur`` (2 * ceil(2 sigma) + 1).
    blur_kernel: int | None = None
    ops: nn.Sequential = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        def prob(value: float | None, name: str) -> float:
            value = self.p if value is None else value
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
            return float(value)

        if self.gamma >= 1.0:
            raise ValueError(f"gamma must be < 1 (gamma factor stays positive), got {self.gamma}")
        if self.brightness > 1.0 or self.contrast > 1.0:
            raise ValueError("brightness and contrast strengths must be <= 1")
        ops: list[nn.Module] = []
        if self.brightness > 0:
            ops.append(KA.RandomBrightness((1 - self.brightness, 1 + self.brightness),
                                           p=prob(self.brightness_p, "brightness_p")))
        if self.contrast > 0:
            ops.append(KA.RandomContrast((1 - self.contrast, 1 + self.contrast),
                                         p=prob(self.contrast_p, "contrast_p")))
        if self.gamma > 0:
            ops.append(KA.RandomGamma((1 - self.gamma, 1 + self.gamma), p=prob(self.gamma_p, "gamma_p")))
        if self.noise > 0:
            ops.append(KA.RandomGaussianNoise(std=self.noise, p=prob(self.noise_p, "noise_p")))
        if self.blur > 0:
            if self.blur_kernel is not None and (self.blur_kernel < 3 or self.blur_kernel % 2 == 0):
                raise ValueError(f"blur_kernel must be odd and >= 3, got {self.blur_kernel}")
            size = self.blur_kernel or 2 * math.ceil(2 * max(self.blur, 0.5)) + 1
            ops.append(KA.RandomGaussianBlur((size, size), (0.1, max(self.blur, 0.1)),
                                             p=prob(self.blur_p, "blur_p")))
        self.ops = nn.Sequential(*ops)

    def __call__(self, batch: Batch) -> Batch:
        if len(self.ops) == 0:
            return batch
        images = batch.images
        x = (images.to(_work_dtype(images.dtype)) + 1) * 0.5
        x = self.ops(x).clamp(0.0, 1.0)
        return attrs.evolve(batch, images=(x * 2 - 1).to(images.dtype))


# ----------------------------------------------------------------------------- factories


def flip(*, p: float = 0.5, permutation: Sequence[int] | None = None) -> Flip:
    """Symmetric horizontal flip; ``permutation`` only for layouts other than 68/5 points."""
    return Flip(p=p, permutation=permutation)


def align(*, size: int | Sequence[int] | None = None, template: Sequence[Sequence[float]] = TEMPLATE_5,
          zoom: float = 1.0, padding_mode: str = "zeros") -> Align:
    """Similarity alignment to a 5-point template (fractions of the output size)."""
    return Align(size=size, template=template, zoom=zoom, padding_mode=padding_mode)


def pose_warp(*, max_degrees: float = 15.0, p: float = 1.0, min_degrees: float = 0.0, depth: float = 0.75,
              iterations: int | None = None, padding_mode: str = "border") -> PoseWarp:
    """Depth-aware re-rendering at yaw + delta, |delta| in [min_degrees, max_degrees]."""
    return PoseWarp(max_degrees=max_degrees, p=p, min_degrees=min_degrees, depth=depth,
                    iterations=iterations, padding_mode=padding_mode)


def photometric(*, p: float = 0.5, brightness: float = 0.2, brightness_p: float | None = None,
                contrast: float = 0.2, contrast_p: float | None = None, gamma: float = 0.2,
                gamma_p: float | None = None, noise: float = 0.02, noise_p: float | None = None,
                blur: float = 1.0, blur_p: float | None = None, blur_kernel: int | None = None) -> Photometric:
    """Kornia brightness, contrast, gamma, noise and blur; each strength 0 disables it."""
    return Photometric(p=p, brightness=brightness, brightness_p=brightness_p, contrast=contrast,
                       contrast_p=contrast_p, gamma=gamma, gamma_p=gamma_p, noise=noise, noise_p=noise_p,
                       blur=blur, blur_p=blur_p, blur_kernel=blur_kernel)


@hookimpl
def facedapt_register_augmentations(registry: Any) -> None:
    registry.register("flip", flip)
    registry.register("align", align)
    registry.register("pose_warp", pose_warp)
    registry.register("photometric", photometric)
