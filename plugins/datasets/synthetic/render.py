"""Batched point-splat rendering with a z-buffer: rotation, projection, occlusion, compositing.

Everything per point is a single elementwise torch op (no fused multiply-adds, no
reductions), so a pixel's value never depends on which batch its image was rendered in.
"""

from __future__ import annotations

import attrs
import torch

#: The frame is a face crop, as a face detector would cut it: centred on the head-space point
#: (0, FRAME_CENTER_Y, FRAME_CENTER_Z) of the face (wherever the view turns it), FRAME_UNITS head
#: units across, from the forehead to below the chin.
FRAME_CENTER_Y = -0.12
FRAME_CENTER_Z = 0.8
FRAME_UNITS = 1.6
VISIBILITY_TOLERANCE = 0.06  # head units a landmark may lie behind the nearest surface
_DEPTH_OFFSET = 4.0  # rotated depths lie in (-4, 4); keys use depth + 4 > 0


@attrs.frozen
class View:
    """Per-image camera and photometric parameters, tensors [B] (colours [B, C])."""

    cos_yaw: torch.Tensor
    sin_yaw: torch.Tensor
    cos_pitch: torch.Tensor
    sin_pitch: torch.Tensor
    scale: torch.Tensor  # multiplies the nominal framing
    shift_x: torch.Tensor  # pixels
    shift_y: torch.Tensor
    bg_from: torch.Tensor
    bg_to: torch.Tensor
    bg_dir_x: torch.Tensor
    bg_dir_y: torch.Tensor
    gain: torch.Tensor
    noise_offset: torch.Tensor  # int64 window start in the noise bank
    # Unit light direction in head space (the world light turned back by this view's rotation).
    light_x: torch.Tensor
    light_y: torch.Tensor
    light_z: torch.Tensor


def unrotate(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, cos_yaw: torch.Tensor, sin_yaw: torch.Tensor,
             cos_pitch: torch.Tensor, sin_pitch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse of ``rotate``: a world (camera) direction in head space (pitch undone, then yaw)."""
    y1 = y * cos_pitch - z * sin_pitch
    z1 = y * sin_pitch + z * cos_pitch
    return x * cos_yaw - z1 * sin_yaw, y1, x * sin_yaw + z1 * cos_yaw


def rotate(points: torch.Tensor, v: View) -> torch.Tensor:
    """Yaw about the vertical axis, then pitch; [B, K, 3] -> [B, K, 3].

    Positive yaw turns the nose (+z) toward +x, the image's right edge (facedapt.data.samples);
    positive pitch lifts the chin. ``splat`` uses the same formulas.
    """
    x, y, z = points.unbind(-1)
    cy, sy = v.cos_yaw[:, None], v.sin_yaw[:, None]
    cp, sp = v.cos_pitch[:, None], v.sin_pitch[:, None]
    x1 = x * cy + z * sy
    z1 = z * cy - x * sy
    y2 = y * cp + z1 * sp
    z2 = z1 * cp - y * sp
    return torch.stack([x1, y2, z2], -1)


def project(points: torch.Tensor, v: View, size: int) -> torch.Tensor:
    """Rotated head-space points [B, K, 3] -> pixel (x, y) [B, K, 2]; pixel i spans [i, i + 1)."""
    k = size / FRAME_UNITS * v.scale[:, None]
    u = size / 2 + k * points[..., 0] + v.shift_x[:, None]
    w = size / 2 - k * (points[..., 1] - FRAME_CENTER_Y) + v.shift_y[:, None]
    return torch.stack([u, w], -1)


_MARGIN = 2  # off-frame points are clamped onto this border, which is cropped away


def depth_scale(num_points: int) -> float:
    """Depth quantisation steps per head unit: the finest power of two whose int32 key
    (quantised depth x num_points + point index) cannot overflow."""
    scale = 2.0**20
    while 2 * _DEPTH_OFFSET * scale * (num_points + 1) >= 2**31 - 1:
        scale /= 2
    return scale


def splat(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, v: View, size: int,
          dscale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer of head-space points ``x, y, z`` [B, K]: winning point per pixel [B, H*W] (-1: none)
    and its quantised depth (int32).

    Rotation and projection are folded into per-image coefficients; the key packs the depth
    above the point index so one int32 ``scatter_reduce`` amax picks the nearest point.
    """
    b, n = x.shape
    full = size + 2 * _MARGIN
    cy, sy, cp, sp = v.cos_yaw, v.sin_yaw, v.cos_pitch, v.sin_pitch
    k = (size / FRAME_UNITS) * v.scale

    def col(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, 1)

    u = x * col(k * cy)
    u += z * col(k * sy)
    u += col(size / 2 + _MARGIN + v.shift_x)
    # A power-of-two depth scale is exact, so folding it into the coefficients changes nothing.
    if bool((sp != 0).any()):
        z1 = z * col(cy)
        z1 -= x * col(sy)
        w = y * col(-k * cp)
        w += z1 * col(-k * sp)
        zq = z1.mul_(col(cp * dscale))
        zq -= y * col(sp * dscale)
    else:  # the same values as above with cp = 1, sp = 0, in fewer passes
        w = y * col(-k)
        zq = z * col(cy * dscale)
        zq -= x * col(sy * dscale)
    w += col(size / 2 + _MARGIN + k * FRAME_CENTER_Y + v.shift_y)
    top = full - 0.5
    u.clamp_(0, top).floor_()
    w.clamp_(0, top).floor_()
    w *= full
    w += u
    flat = w.to(torch.int64)
    zq += _DEPTH_OFFSET * dscale
    key = zq.to(torch.int32)
    key *= n
    key += torch.arange(n, dtype=torch.int32)
    zbuf = torch.full((b, full * full), -1, dtype=torch.int32)
    zbuf.scatter_reduce_(1, flat, key, reduce="amax", include_self=True)
    zbuf = zbuf.view(b, full, full)[:, _MARGIN:_MARGIN + size, _MARGIN:_MARGIN + size].reshape(b, size * size)
    hit = zbuf >= 0
    return torch.where(hit, zbuf % n, -1), torch.where(hit, zbuf // n, -1)


def fill_holes(winner: torch.Tensor, depth: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Give an empty pixel between two covered neighbours (above/below, else left/right) the upper/left one's point.

    Stretched skin (a dropped jaw) and grazing angles leave single-pixel gaps between splats.
    """
    b = winner.shape[0]
    w = winner.view(b, size, size)
    d = depth.view(b, size, size)
    pad_w = torch.nn.functional.pad(w, (1, 1, 1, 1), value=-1)
    pad_d = torch.nn.functional.pad(d, (1, 1, 1, 1), value=-1)
    up, down = pad_w[:, :-2, 1:-1], pad_w[:, 2:, 1:-1]
    left, right = pad_w[:, 1:-1, :-2], pad_w[:, 1:-1, 2:]
    empty = w < 0
    vert = empty & (up >= 0) & (down >= 0)
    horiz = empty & ~vert & (left >= 0) & (right >= 0)
    w = torch.where(vert, up, torch.where(horiz, left, w))
    d = torch.where(vert, pad_d[:, :-2, 1:-1], torch.where(horiz, pad_d[:, 1:-1, :-2], d))
    return w.reshape(b, -1), d.reshape(b, -1)


def background(v: View, size: int, gain: torch.Tensor) -> torch.Tensor:
    """Linear colour gradients [B, C, H*W], multiplied by ``gain`` [B]."""
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    t = v.bg_dir_x[:, None, None] * grid[None, None, :] + v.bg_dir_y[:, None, None] * grid[None, :, None]
    t = t.view(len(t), 1, size * size)
    lo = (v.bg_from + (v.bg_to - v.bg_from) * 0.5) * gain[:, None]  # colour at t = 0
    half = (v.bg_to - v.bg_from) * (0.5 * gain[:, None])
    return t * half[:, :, None] + lo[:, :, None]


def render_views(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, point_ids: torch.Tensor,
                 colors: torch.Tensor, normals: torch.Tensor, owner: torch.Tensor, v: View, size: int,
                 noise: torch.Tensor, dscale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [B, C, H, W] and the depth buffer [B, H*W] of B posed faces.

    ``x, y, z`` [B, K] are head-space positions of the view's points, ``point_ids`` [K] their
    template indices, ``colors`` [M, Np, C] unshaded template colours of M captures,
    ``normals`` [3, M, Np] their head-space unit normals and ``owner`` [B] each image's capture
    row. ``noise`` is the bank pre-scaled to 0..255 units with the rounding half added.
    Shading is per view (Lambertian, ``v.light_*``), so a head turned away from the light darkens.
    """
    b = x.shape[0]
    m, n_tpl, ch = colors.shape
    winner, depth = fill_holes(*splat(x, y, z, v, size, dscale), size)
    covered = winner >= 0
    # Colour lookup only for the winning points, not for every splatted one.
    rows = owner[:, None] * n_tpl + point_ids[winner.clamp(min=0)]
    gain = v.gain * 255.0
    flat_rows = rows.view(-1)
    face = colors.reshape(m * n_tpl, ch).index_select(0, flat_rows).view(b, size * size, ch)
    # Shading only for the winning points: cheaper than shading every point of every view.
    n = normals.reshape(3, m * n_tpl).index_select(1, flat_rows).view(3, b, size * size)
    lam = n[0] * v.light_x[:, None] + n[1] * v.light_y[:, None] + n[2] * v.light_z[:, None]
    face *= (lam.clamp_(min=0) * 0.68 + 0.42)[..., None]
    face *= gain[:, None, None]
    span = ch * size * size
    img = torch.empty((b, ch, size * size))
    torch.where(covered[:, None, :], face.transpose(1, 2), background(v, size, gain), out=img)
    img = img.view(b, span)
    img += noise.unfold(0, span, 1).index_select(0, v.noise_offset)
    return img.clamp_(0.5, 255.5).to(torch.uint8).view(b, ch, size, size), depth


def landmark_pixels(landmarks: torch.Tensor, v: View, size: int, depth: torch.Tensor,
                    dscale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates [B, 68, 2] and visibility [B, 68] of head-space landmarks."""
    rotated = rotate(landmarks, v)
    xy = project(rotated, v, size)
    pix = xy.floor().to(torch.int64)
    inside = (pix >= 0).all(-1) & (pix < size).all(-1)
    flat = (pix[..., 1] * size + pix[..., 0]).clamp(0, size * size - 1)
    surface = torch.gather(depth, 1, flat)
    own = ((rotated[..., 2] + (_DEPTH_OFFSET + VISIBILITY_TOLERANCE)) * dscale).to(torch.int32)
    return xy, inside & (own >= surface)
