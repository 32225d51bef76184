"""Batched point-splat rendering with a z-buffer: rotation, projection, occlusion, compositing."""

from __future__ import annotations

import attrs
import torch

#: Head-space height the image is centred on, and head units across the image height.
FRAME_CENTER_Y = -0.1
FRAME_UNITS = 2.2
_DEPTH_SCALE = float(2**20)  # depth quantisation for the z-buffer key
VISIBILITY_TOLERANCE = 0.06  # head units a landmark may lie behind the nearest surface


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


def rotate(points: torch.Tensor, v: View) -> torch.Tensor:
    """Yaw about the vertical axis, then pitch; [B, K, 3] -> [B, K, 3].

    Positive yaw turns the subject's left cheek (+x) toward the camera (+z), so the nose
    moves to the image's left; positive pitch lifts the chin.
    """
    x, y, z = points.unbind(-1)
    cy, sy = v.cos_yaw[:, None], v.sin_yaw[:, None]
    cp, sp = v.cos_pitch[:, None], v.sin_pitch[:, None]
    x1 = x * cy - z * sy
    z1 = z * cy + x * sy
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


def splat(points: torch.Tensor, v: View, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer of rotated points: winning point index per pixel [B, H*W] (-1: none) and its depth key."""
    b, n, _ = points.shape
    full = size + 2 * _MARGIN
    xy = project(points, v, size) + _MARGIN
    top = full - 0.5
    flat = (xy[..., 1].clamp(0, top).floor() * full + xy[..., 0].clamp(0, top).floor()).to(torch.int64)
    flat += torch.arange(0, b * full * full, full * full)[:, None]
    key = ((points[..., 2] + 4.0) * _DEPTH_SCALE).to(torch.int64) * n + torch.arange(n)[None, :]
    zbuf = torch.full((b * full * full,), -1, dtype=torch.int64)
    zbuf.scatter_reduce_(0, flat.view(-1), key.view(-1), reduce="amax", include_self=True)
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


def background(v: View, size: int) -> torch.Tensor:
    """Linear colour gradients [B, C, H, W]."""
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    t = 0.5 + 0.5 * (v.bg_dir_x[:, None, None] * grid[None, None, :] + v.bg_dir_y[:, None, None] * grid[None, :, None])
    t = t[:, None]
    return v.bg_from[:, :, None, None] + (v.bg_to - v.bg_from)[:, :, None, None] * t


def render_views(points: torch.Tensor, colors: torch.Tensor, v: View, size: int, noise_bank: torch.Tensor,
                 noise_sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [B, C, H, W] and the depth-key buffer [B, H*W] of B posed faces.

    ``points`` [B, K, 3] are head-space positions, ``colors`` [B, K, C] shaded colours.
    """
    b, n, ch = colors.shape
    rotated = rotate(points, v)
    winner, depth = fill_holes(*splat(rotated, v, size), size)
    covered = (winner >= 0).view(b, size, size)
    flat = (torch.arange(b)[:, None] * n + winner.clamp(min=0)).flatten()
    face = colors.reshape(b * n, ch)[flat].view(b, size, size, ch).permute(0, 3, 1, 2)
    img = torch.where(covered[:, None], face, background(v, size)) * v.gain[:, None, None, None]
    span = ch * size * size
    window = v.noise_offset[:, None] + torch.arange(span)[None, :]
    img = img + noise_sigma * noise_bank[window].view(b, ch, size, size)
    return (img.clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8), depth


def landmark_pixels(landmarks: torch.Tensor, v: View, size: int,
                    depth_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates [B, 68, 2] and visibility [B, 68] of head-space landmarks."""
    rotated = rotate(landmarks, v)
    xy = project(rotated, v, size)
    pix = xy.floor().to(torch.int64)
    inside = (pix >= 0).all(-1) & (pix < size).all(-1)
    flat = (pix[..., 1] * size + pix[..., 0]).clamp(0, size * size - 1)
    surface = torch.gather(depth_keys, 1, flat)
    own = ((rotated[..., 2] + 4.0 + VISIBILITY_TOLERANCE) * _DEPTH_SCALE).to(torch.int64)
    return xy, inside & (own >= surface)
