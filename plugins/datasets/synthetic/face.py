"""The 3D face: a shared point template, per-capture shape deformation, albedo and landmarks.

Coordinates. Head space: x toward the subject's left (the viewer's right when frontal),
y up, z out of the face toward a frontal camera; the head ellipsoid has half-height 1.
Features are placed in face-plane coordinates P = 0.75 * X, Q = Y, where (X, Y, Z) is a
direction on the unit sphere (Z > 0 on the face side), so a circle in (P, Q) looks round.
Per-capture work uses only exact float operations (no exp/sin) so results never depend on
how captures are batched.
"""

from __future__ import annotations

import math

import attrs
import torch

from .expressions import AU
from .render import FRAME_CENTER_Y, FRAME_CENTER_Z, FRAME_UNITS

ASPECT = 0.75  # P = ASPECT * X
MOUTH_Q = -0.42
EYE_Q = 0.15


@attrs.frozen
class Template:
    """Undeformed points of one head: a (phi, theta) grid over the ellipsoid plus a neck."""

    X: torch.Tensor  # [Np] unit-sphere direction (neck points: their own values, see is_neck)
    Y: torch.Tensor
    Z: torch.Tensor
    ear: torch.Tensor  # [Np] ear weight in [0, 1]
    is_neck: torch.Tensor  # bool [Np]
    neck_xyz: torch.Tensor  # [Nn, 3] neck positions for face_width 1
    n_phi: int
    n_theta: int
    n_neck: int  # neck points around; the neck grid is [rows, n_neck]
    front: torch.Tensor  # int64 indices of face-side points (where features are painted)
    regions: dict[str, torch.Tensor]  # int64 indices of boxes in (P, Q) holding each feature

    @property
    def num_points(self) -> int:
        return len(self.X)

    @property
    def num_head(self) -> int:
        return self.n_phi * self.n_theta


def build_template(image_size: int) -> Template:
    """Grid density ~1.2 points per pixel along each axis at the default framing (gaps are filled)."""
    px_per_unit = image_size / FRAME_UNITS
    n_phi = int(math.ceil(1.3 * math.pi * px_per_unit))
    n_theta = int(math.ceil(1.15 * 2 * math.pi * 0.8 * px_per_unit))
    phi = torch.linspace(-0.49 * math.pi, 0.49 * math.pi, n_phi, dtype=torch.float64)
    theta = (torch.arange(n_theta, dtype=torch.float64) + 0.5) / n_theta * 2 * math.pi - math.pi
    ph, th = torch.meshgrid(phi, theta, indexing="ij")
    X = (th.sin() * ph.cos()).flatten()
    Y = ph.sin().flatten()
    Z = (th.cos() * ph.cos()).flatten()
    # Ears sit just behind the sides of the head, around eye-to-nose height.
    d_th = (th.abs() - (math.pi / 2 + 0.1)) / 0.17
    d_y = (ph.sin() - 0.02) / 0.2
    ear = (1 - d_th**2 - d_y**2).clamp(min=0).flatten()

    # Neck: an elliptic cylinder below the chin, a little behind the face.
    n_a = int(math.ceil(1.15 * 2 * math.pi * 0.4 * px_per_unit))
    n_y = int(math.ceil(1.2 * 1.1 * px_per_unit))
    a = (torch.arange(n_a, dtype=torch.float64) + 0.5) / n_a * 2 * math.pi
    ys = torch.linspace(-0.45, -1.55, n_y, dtype=torch.float64)
    ya, aa = torch.meshgrid(ys, a, indexing="ij")
    neck_xyz = torch.stack([0.4 * aa.sin(), ya, 0.34 * aa.cos() - 0.1], -1).reshape(-1, 3)
    neck_dir = torch.stack([aa.sin(), torch.zeros_like(aa), aa.cos()], -1).reshape(-1, 3)

    n_head = n_phi * n_theta
    X = torch.cat([X, neck_dir[:, 0]]).float()
    Y = torch.cat([Y, torch.zeros(len(neck_xyz), dtype=torch.float64)]).float()
    Z = torch.cat([Z, neck_dir[:, 2]]).float()
    ear = torch.cat([ear, torch.zeros(len(neck_xyz), dtype=torch.float64)]).float()
    is_neck = torch.arange(len(X)) >= n_head
    P, Q = ASPECT * X, Y
    face = (~is_neck) & (Z > 0.05)
    boxes = {  # (P min, P max, Q min, Q max), generous enough for every subject and movement
        "eyes": (-0.48, 0.48, -0.02, 0.34),
        "brows": (-0.5, 0.5, 0.12, 0.58),
        "nose": (-0.2, 0.2, -0.32, 0.22),
        "folds": (-0.42, 0.42, -0.6, -0.05),
        "mouth": (-0.36, 0.36, -0.8, -0.15),
        "cheeks": (-0.46, 0.46, -0.4, 0.05),
    }
    regions = {
        name: torch.nonzero(face & (P >= p0) & (P <= p1) & (Q >= q0) & (Q <= q1)).flatten()
        for name, (p0, p1, q0, q1) in boxes.items()
    }
    return Template(X=X, Y=Y, Z=Z, ear=ear, is_neck=is_neck, neck_xyz=neck_xyz.float(), n_phi=n_phi,
                    n_theta=n_theta, n_neck=n_a, front=torch.nonzero(face).flatten(), regions=regions)


def crop_template(t: Template, used: torch.Tensor) -> tuple[Template, torch.Tensor]:
    """The template cut down to the grid rows and columns (and neck rows) holding ``used`` points
    (bool [Np]), one spare row and column around them so that every used point keeps the
    neighbours its normal is computed from; returns it and each old index's new one (-1: dropped).
    Per-point values of the kept points are unchanged, so images are too."""
    grid = used[:t.num_head].view(t.n_phi, t.n_theta)
    n_y = int(t.is_neck.sum()) // t.n_neck

    def span(mask: torch.Tensor, n: int, periodic: bool) -> tuple[int, int]:
        idx = torch.nonzero(mask).flatten()
        if not len(idx):
            return 0, 0
        lo, hi = int(idx[0]) - 1, int(idx[-1]) + 2
        if periodic and (lo < 0 or hi > n):  # the wrap-around neighbours are needed: keep it all
            return 0, n
        return max(lo, 0), min(hi, n)  # rows end with one-sided differences in any case

    r0, r1 = span(grid.any(1), t.n_phi, periodic=False)
    c0, c1 = span(grid.any(0), t.n_theta, periodic=True)
    n0, n1 = span(used[t.num_head:].view(n_y, t.n_neck).any(1), n_y, periodic=False)
    keep = torch.zeros(t.num_points, dtype=torch.bool)
    keep[:t.num_head].view(t.n_phi, t.n_theta)[r0:r1, c0:c1] = True
    keep[t.num_head:].view(n_y, t.n_neck)[n0:n1] = True
    new = torch.full((t.num_points,), -1, dtype=torch.int64)
    new[keep] = torch.arange(int(keep.sum()))

    def remap(idx: torch.Tensor) -> torch.Tensor:
        m = new[idx]
        return m[m >= 0]

    neck_keep = keep[t.num_head:]
    cropped = Template(X=t.X[keep], Y=t.Y[keep], Z=t.Z[keep], ear=t.ear[keep], is_neck=t.is_neck[keep],
                       neck_xyz=t.neck_xyz[neck_keep], n_phi=r1 - r0, n_theta=c1 - c0, n_neck=t.n_neck,
                       front=remap(t.front), regions={k: remap(v) for k, v in t.regions.items()})
    return cropped, new


def _col(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, 1)


@attrs.frozen
class FaceShape:
    """Per-capture feature geometry in face-plane units, each tensor [B, 1]."""

    v: dict[str, torch.Tensor]

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.v[name]
        except KeyError:
            raise AttributeError(name) from None


def face_shape(shape: dict[str, torch.Tensor], act: torch.Tensor, asymmetry: torch.Tensor) -> FaceShape:
    """Where every feature is for B captures, from identity shape [B] and movements [B, A]."""
    g = {name: _col(act[:, i]) for name, i in AU.items()}
    s = {k: _col(v) for k, v in shape.items()}
    v: dict[str, torch.Tensor] = dict(g)
    v.update(s)
    v["ex"] = 0.25 * s["eye_spacing"]
    v["ew"] = 0.145 * s["eye_size"]
    # At rest the upper lid covers more of the iris; widened, the eye opens as far as before.
    v["eu"] = 0.055 * s["eye_size"] * (1 + 1.6 * g["eye_widen"] - 0.75 * g["eye_squint"]
                                      - 0.35 * g["brow_lower"]).clamp(min=0.14)
    v["el"] = 0.042 * s["eye_size"] * (1 + 0.35 * g["eye_widen"] - 0.6 * g["eye_squint"]).clamp(min=0.15)
    v["bw"] = 0.145 * 1.2 * s["eye_size"]
    v["by"] = EYE_Q + 0.115 + s["brow_height"]
    v["ny"] = -0.1 * s["nose_length"]
    v["nostril_up"] = 0.035 * g["nose_wrinkle"] + 0.02 * g["upper_lip_raise"]
    v["mw"] = 0.235 * s["mouth_width"] * (1 + 0.3 * g["lip_stretch"] + 0.22 * g["lip_corner_pull"]
                                           - 0.12 * g["lip_press"] - 0.22 * g["jaw_drop"])
    pull_l = g["lip_corner_pull"] * (1 + _col(asymmetry))
    pull_r = g["lip_corner_pull"] * (1 - _col(asymmetry))
    base = -0.12 * g["lip_corner_depress"] - 0.015 * g["lip_stretch"]
    v["corner_l"] = 0.14 * pull_l + base
    v["corner_r"] = 0.14 * pull_r + base
    v["open"] = ((0.22 * g["jaw_drop"] + 0.03 * g["upper_lip_raise"] + 0.05 * g["lip_stretch"])
                 * (1 - 0.9 * g["lip_press"]).clamp(min=0))
    v["lift"] = 0.045 * g["upper_lip_raise"]  # upper lip rises above the opening
    v["tu"] = 0.045 * s["lip_thickness"] * (1 - 0.7 * g["lip_press"]).clamp(min=0.2)
    v["tl"] = 0.055 * s["lip_thickness"] * (1 - 0.7 * g["lip_press"]).clamp(min=0.2)
    v["teeth"] = (1.5 * g["lip_corner_pull"] + 0.5 * g["upper_lip_raise"] - 0.3).clamp(0, 1)
    return FaceShape(v)


def _bump(P: torch.Tensor, Q: torch.Tensor, p0: torch.Tensor | float, q0: torch.Tensor | float,
          rp: float | torch.Tensor, rq: float | torch.Tensor) -> torch.Tensor:
    """Smooth compact bump (1 - r^2)^2 with radii rp, rq; exact arithmetic only."""
    r2 = ((P - p0) / rp) ** 2 + ((Q - q0) / rq) ** 2
    return (1 - r2).clamp(min=0) ** 2


def _surface_offsets(P: torch.Tensor, Q: torch.Tensor, f: FaceShape) -> torch.Tensor:
    """Depth added by nose, cheeks, brow ridge and eye sockets at face-plane points."""
    ap = P.abs()
    z = 0.16 * f.nose_height * _bump(P, Q, 0.0, f.ny, 0.1 * f.nose_width, 0.1 * f.nose_length)
    z = z + 0.13 * f.nose_height * _bump(P, Q, 0.0, f.ny + 0.15 * f.nose_length, 0.045 * f.nose_width,
                                         0.17 * f.nose_length)
    z = z + 0.05 * (0.3 + f.lip_corner_pull + 0.5 * f.eye_squint) * _bump(ap, Q, 0.22, -0.16, 0.13, 0.11)
    z = z + 0.04 * _bump(ap, Q, 0.22, f.by - 0.02, 0.2, 0.06)
    return z - 0.035 * _bump(ap, Q, f.ex, EYE_Q, 0.12, 0.07)


def head_points(X: torch.Tensor, Y: torch.Tensor, Z: torch.Tensor, f: FaceShape,
                regions: dict[str, torch.Tensor] | None = None,
                ear: torch.Tensor | None = None) -> torch.Tensor:
    """Deformed 3D positions [B, K, 3] of head surface directions [K] (or [B, K])."""
    return torch.stack(_head_xyz(X, Y, Z, f, regions, ear), -1)


def _head_xyz(X: torch.Tensor, Y: torch.Tensor, Z: torch.Tensor, f: FaceShape,
              regions: dict[str, torch.Tensor] | None,
              ear: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lower = (-Y).clamp(0, 1)
    x = 0.72 * f.face_width * X * (1 - f.jaw_taper * lower * lower)
    y = torch.where(Y < 0, Y * (0.85 * f.face_length), Y + 0 * f.face_length)
    z = 0.82 * Z + 0 * f.face_width
    P, Q = ASPECT * X, Y
    if regions is None:  # few points (landmarks): evaluate everywhere
        z = z + _surface_offsets(P.expand_as(z), Q.expand_as(z), f) * (Z > 0.05)
    else:  # template: only the boxes the offsets can reach
        idx = torch.cat([regions["nose"], regions["cheeks"], regions["eyes"], regions["brows"]]).unique()
        z[:, idx] = z[:, idx] + _surface_offsets(P[idx], Q[idx], f)
    if ear is not None:
        x = x + torch.sign(X) * 0.09 * ear.sqrt()
    # Jaw drop lowers everything below the mouth on the face side; the skull stays.
    drop = 0.18 * f.jaw_drop * ((MOUTH_Q - 0.05 - Q) / 0.45).clamp(0, 1) * ((Z + 0.2) / 0.5).clamp(0, 1)
    y = y - drop
    return x, y, z


def capture_points(t: Template, f: FaceShape) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and outward unit normals of B captures, each [3, B, Np] (one plane per axis,
    the layout the renderer gathers from)."""
    head = ~t.is_neck
    x, y, z = _head_xyz(t.X[head], t.Y[head], t.Z[head], f, t.regions, t.ear[head])
    b = x.shape[0]

    def d_theta(g: torch.Tensor) -> torch.Tensor:
        g = g.view(b, t.n_phi, t.n_theta)
        return (g.roll(-1, 2) - g.roll(1, 2)).view(b, -1)

    def d_phi(g: torch.Tensor) -> torch.Tensor:
        g = g.view(b, t.n_phi, t.n_theta)
        return torch.cat([g[:, 1:2] - g[:, :1], g[:, 2:] - g[:, :-2], g[:, -1:] - g[:, -2:-1]], 1).view(b, -1)

    # Cross product written out: torch.cross on [..., 3] is several times slower here.
    ax, ay, az = d_theta(x), d_theta(y), d_theta(z)
    bx, by, bz = d_phi(x), d_phi(y), d_phi(z)
    nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    inv = (nx * nx + ny * ny + nz * nz).sqrt().clamp(min=1e-12).reciprocal()
    neck = t.neck_xyz
    n_neck = len(neck)
    pos = torch.empty((3, b, t.num_points))
    normal = torch.empty((3, b, t.num_points))
    h = t.num_head
    pos[0, :, :h], pos[1, :, :h], pos[2, :, :h] = x, y, z
    pos[0, :, h:] = neck[:, 0] * f.face_width
    pos[1, :, h:], pos[2, :, h:] = neck[:, 1], neck[:, 2]
    normal[0, :, :h], normal[1, :, :h], normal[2, :, :h] = nx * inv, ny * inv, nz * inv
    normal[0, :, h:], normal[1, :, h:], normal[2, :, h:] = t.X[h:], torch.zeros(n_neck), t.Z[h:]
    return pos, normal


def _soft(d: torch.Tensor, aa: float) -> torch.Tensor:
    """Coverage of a signed distance d (positive inside) with an anti-aliased edge."""
    return (d / aa + 0.5).clamp(0, 1)


def _paint(sub: torch.Tensor, alpha: torch.Tensor, rgb: torch.Tensor) -> None:
    """Blend ``rgb`` over a region's colours [B, K, 3] in place with coverage ``alpha`` [B, K]."""
    sub += (rgb - sub) * alpha[..., None]


def albedo(t: Template, f: FaceShape, skin: torch.Tensor, hair: torch.Tensor, iris: torch.Tensor,
           hairline: torch.Tensor, hair_length: torch.Tensor, aa: float) -> torch.Tensor:
    """Surface colour [B, Np, 3] before shading; ``aa`` is half a pixel in face-plane units."""
    b = skin.shape[0]
    skin3, hair3 = skin[:, None, :], hair[:, None, :]
    color = skin3.expand(b, t.num_points, 3).clone()
    X, Y, Z = t.X, t.Y, t.Z
    P = ASPECT * X
    head = ~t.is_neck
    # Hair: above the forehead hairline (temples lower), over the sides and down the back.
    front_line = _col(hairline) - 0.7 * (P.abs() - 0.3).clamp(min=0)
    side_w = ((0.35 - Z) / 0.4).clamp(0, 1)  # 0 on the face, 1 at the sides and back
    back_w = ((-0.05 - Z) / 0.3).clamp(0, 1)
    line = front_line * (1 - side_w) + 0.08 * side_w
    line = line * (1 - back_w) + _col(hair_length) * back_w
    hair_a = _soft(Y - line, aa) * head * (1 - (t.ear * 8).clamp(0, 1))
    color = color + (hair3 - color) * hair_a[..., None]
    # Ears: an inner shadow ring.
    ring = ((t.ear - 0.25) * (0.7 - t.ear) * 12).clamp(0, 1)
    color = color * (1 - 0.35 * ring[None, :, None])
    color[:, t.is_neck] *= 0.92  # neck sits in the chin's shade

    _paint_eyes(color, t, f, skin3, hair3, iris[:, None, :], aa)
    _paint_nose_and_folds(color, t, f, skin3, aa)
    _paint_mouth(color, t, f, skin3, aa)
    return color


def brow_height(u: torch.Tensor, f: FaceShape) -> torch.Tensor:
    """Face-plane height of the brow's centre line at u (-1 inner end, +1 outer end)."""
    inner, outer = (1 - u) / 2, (1 + u) / 2
    return (f.by + 0.025 * f.brow_arch * (1 - u * u) + 0.13 * f.brow_inner_raise * inner
            + 0.1 * f.brow_outer_raise * outer - 0.05 * f.brow_lower - 0.13 * f.brow_lower * inner)


def _paint_eyes(color: torch.Tensor, t: Template, f: FaceShape, skin3: torch.Tensor, hair3: torch.Tensor,
                iris3: torch.Tensor, aa: float) -> None:
    idx = t.regions["eyes"]
    P, Q = ASPECT * t.X[idx], t.Y[idx]
    sub = color[:, idx]
    dx = P.abs() - f.ex
    dy = Q - EYE_Q
    shape = 1 - (dx / f.ew) ** 2
    up, low = f.eu * shape, f.el * shape
    eye = _soft(torch.minimum(up - dy, dy + low), aa) * (shape > 0)
    # The socket's shade around the eye and the upper-lid crease: eyes read as dark in a photo.
    socket = _bump(dx, dy, 0.0, 0.015, 1.45 * f.ew, 2.2 * f.eu + 0.03)
    _paint(sub, (0.35 + 0.3 * f.brow_lower.clamp(0, 1)) * socket, skin3 * 0.62)
    crease = _soft(0.014 - (dy - up - 0.045 + 0.02 * f.eye_squint).abs(), aa) * _soft(1.0 * f.ew - dx.abs(), aa)
    _paint(sub, 0.45 * crease * (1 - 0.6 * f.eye_widen.clamp(0, 1)), skin3 * 0.5)
    _paint(sub, eye, torch.tensor([0.68, 0.66, 0.63]))  # the white of the eye, in the socket's shade
    r = (dx * dx + (dy + 0.005) ** 2).sqrt()
    _paint(sub, eye * _soft(0.072 - r, aa), iris3 * 0.6)
    _paint(sub, eye * _soft(0.03 - r, aa), torch.tensor([0.03, 0.02, 0.02]))
    lash = _soft(0.026 - (dy - up - 0.006).abs(), aa) * _soft(1.1 * f.ew - dx.abs(), aa)
    _paint(sub, lash, torch.tensor([0.06, 0.045, 0.04]))
    lid = 0.6 * _soft(0.012 - (dy + low + 0.004).abs(), aa) * (shape > 0)
    _paint(sub, lid, skin3 * 0.45)
    color[:, idx] = sub

    idx = t.regions["brows"]
    P, Q = ASPECT * t.X[idx], t.Y[idx]
    sub = color[:, idx]
    u = (P.abs() - f.ex + 0.045 * f.brow_lower) / f.bw  # -1 inner end, +1 outer end
    yb = brow_height(u, f)
    thick = 0.05 * f.brow_thickness * (1 - 0.35 * (u + 1) / 2) * (1 + 0.3 * f.brow_lower.clamp(0, 1))
    brow = _soft(thick - (Q - yb).abs(), aa) * _soft((1 - u.abs()) * f.bw, aa)
    _paint(sub, brow, hair3 * 0.4 + 0.03)
    # Forehead lines from raised brows, vertical frown lines from lowered ones.
    raise_ = (0.5 * (f.brow_inner_raise + f.brow_outer_raise) - 0.3).clamp(0, 1)
    rows = sum(_soft(0.012 - (Q - f.by - h).abs(), aa) for h in (0.1, 0.16))
    _paint(sub, 0.5 * raise_ * rows * _soft(0.3 - P.abs(), aa), skin3 * 0.55)
    # Lowered brows bunch the skin between them: a deeply shaded furrow with two faint vertical
    # creases (dark creases read less as anger than the shade does).
    frown = (f.brow_lower - 0.15).clamp(0, 1)
    glabella = _bump(P, Q, 0.0, f.by - 0.06, 0.1, 0.1)
    _paint(sub, frown * glabella, skin3 * 0.45)
    cols = _soft(0.014 - ((P.abs() - 0.04).abs()), aa) * _soft(0.08 - (Q - f.by + 0.05).abs(), aa)
    _paint(sub, 0.3 * frown * cols, skin3 * 0.4)
    color[:, idx] = sub


def _paint_nose_and_folds(color: torch.Tensor, t: Template, f: FaceShape, skin3: torch.Tensor, aa: float) -> None:
    idx = t.regions["nose"]
    P, Q = ASPECT * t.X[idx], t.Y[idx]
    sub = color[:, idx]
    nq = f.ny - 0.045 + f.nostril_up
    rw = 0.022 * f.nose_width * (1 + 0.3 * f.nose_wrinkle)
    nostril = _soft(1 - ((P.abs() - 0.045 * f.nose_width) / rw) ** 2 - ((Q - nq) / 0.013) ** 2, 0.3)
    _paint(sub, 0.7 * nostril, skin3 * 0.3)
    lines = sum(_soft(0.011 - (Q - h).abs(), aa) for h in (0.0, 0.045, 0.09))
    _paint(sub, 0.8 * f.nose_wrinkle.clamp(0, 1) * lines * _soft(0.08 - P.abs(), aa), skin3 * 0.5)
    color[:, idx] = sub

    idx = t.regions["folds"]
    P, Q = ASPECT * t.X[idx], t.Y[idx]
    sub = color[:, idx]
    ap = P.abs()
    corner = torch.where(P > 0, f.corner_l, f.corner_r)
    ax, ay = 0.075 * f.nose_width + 0.02, f.ny - 0.03 + f.nostril_up
    bx, by = f.mw + 0.035, MOUTH_Q + corner + 0.01
    ux, uy = bx - ax, by - ay
    s = (((ap - ax) * ux + (Q - ay) * uy) / (ux * ux + uy * uy)).clamp(0, 1)
    d = ((ap - ax - s * ux) ** 2 + (Q - ay - s * uy) ** 2).sqrt()
    strength = (0.15 + 0.6 * f.lip_corner_pull + 0.5 * f.upper_lip_raise + 0.3 * f.nose_wrinkle).clamp(0, 0.85)
    _paint(sub, strength * _soft(0.014 - d, aa), skin3 * 0.5)
    color[:, idx] = sub


def mouth_curves(P: torch.Tensor, f: FaceShape) -> tuple[torch.Tensor, ...]:
    """Opening top/bottom and lip outer edges at face-plane abscissae P."""
    tt = P / f.mw
    m = (1 - tt * tt).clamp(min=0)
    sm = m.sqrt()
    c = MOUTH_Q + torch.where(P > 0, f.corner_l, f.corner_r) * tt * tt
    top = c + (0.3 * f.open + f.lift) * m + 0.011
    bottom = c - 0.7 * f.open * m - 0.011
    return top, bottom, top + f.tu * sm, bottom - f.tl * sm, tt


def _paint_mouth(color: torch.Tensor, t: Template, f: FaceShape, skin3: torch.Tensor, aa: float) -> None:
    idx = t.regions["mouth"]
    P, Q = ASPECT * t.X[idx], t.Y[idx]
    sub = color[:, idx]
    top, bottom, lip_top, lip_bottom, tt = mouth_curves(P, f)
    span = _soft((1 - tt.abs()) * f.mw, aa)
    lips = _soft(torch.minimum(Q - lip_bottom, lip_top - Q), aa) * span
    # The lower lip's shadow on the chin.
    under = _soft(0.035 - (Q - lip_bottom + 0.03).abs(), aa) * _soft((0.8 - tt.abs()) * f.mw, aa)
    _paint(sub, 0.35 * under, skin3 * 0.6)
    _paint(sub, lips, skin3 * torch.tensor([0.82, 0.63, 0.64]) + torch.tensor([0.06, 0.0, 0.02]))  # skin-toned
    inside = _soft(torch.minimum(top - Q, Q - bottom), aa) * span
    _paint(sub, inside, torch.tensor([0.1, 0.03, 0.03]))
    gap = (top - bottom).clamp(min=0)
    upper = _soft(torch.minimum(top - Q, Q - top + torch.minimum(gap * 0.45, torch.full_like(gap, 0.045))), aa)
    lower = _soft(Q - bottom, aa) * _soft(bottom + 0.03 * f.lip_stretch - Q, aa)
    teeth = inside * (f.teeth * upper + (0.4 * f.lip_stretch.clamp(0, 1) * lower))
    _paint(sub, teeth.clamp(0, 1), torch.tensor([0.93, 0.91, 0.85]))
    color[:, idx] = sub


_GAP = 0.8  # pixels: the widest gap a thinned grid may leave (the full grid's own at the face centre)
_MAX_STRIDE = 8


def _strides(step: torch.Tensor, dim: int, periodic: bool) -> torch.Tensor:
    """Power-of-two stride per grid point such that stride x the largest nearby step <= _GAP."""
    k = 2 * _MAX_STRIDE - 1  # look as far as the widest stride reaches
    s = step.unsqueeze(0).unsqueeze(0) if dim == 1 else step.T.unsqueeze(0).unsqueeze(0)
    mode = "circular" if periodic else "replicate"
    s = torch.nn.functional.pad(s, (k // 2, k // 2, 0, 0), mode=mode)
    s = torch.nn.functional.max_pool2d(s, (1, k), stride=1)[0, 0]
    s = s if dim == 1 else s.T
    stride = torch.ones_like(s, dtype=torch.int64)
    for m in (2, 4, 8):
        stride = torch.where(s * m <= _GAP, m, stride)
    return stride


def _thin(pix: torch.Tensor) -> torch.Tensor:
    """Keep-mask [R*S] of a grid [C, R, S, 2] of pixel positions (columns wrap around): every
    stride-th row and column where the projected spacing is dense."""
    col = (pix.roll(-1, 2) - pix).norm(dim=-1)
    col = torch.maximum(col, col.roll(1, 2)).amax(0)
    row = (pix[:, 1:] - pix[:, :-1]).norm(dim=-1)
    row = torch.maximum(torch.nn.functional.pad(row, (0, 0, 0, 1)), torch.nn.functional.pad(row, (0, 0, 1, 0)))
    row = row.amax(0)
    s_col, s_row = _strides(col, 1, periodic=True), _strides(row, 0, periodic=False)
    r = torch.arange(pix.shape[1])[:, None]
    c = torch.arange(pix.shape[2])[None, :]
    return ((c % s_col == 0) & (r % s_row == 0)).flatten()


def view_points(t: Template, probe: torch.Tensor, yaw: float, pitch: float, px_per_unit: float,
                reach: float) -> torch.Tensor:
    """Template indices worth splatting at one view: those that can face the camera and land in the
    frame, thinned where the grid lands much denser than a pixel (grazing sides, the crown).
    ``probe`` [3, C, Np] are extreme deformed heads; the spacing is the largest any of them shows,
    and a point is out of frame when every probe puts it further than ``reach`` head units
    (the frame's half-width at the widest jittered framing, plus a margin) from the frame's centre."""
    y, p = math.radians(yaw), math.radians(pitch)
    X, Y, Z = probe
    u = px_per_unit * (X * math.cos(y) + Z * math.sin(y))
    z1 = Z * math.cos(y) - X * math.sin(y)
    w = px_per_unit * (Y * math.cos(p) + z1 * math.sin(p))
    pix = torch.stack([u, w], -1)
    c = probe.shape[1]
    head = _thin(pix[:, :t.num_head].reshape(c, t.n_phi, t.n_theta, 2))
    n_y = int(t.is_neck.sum()) // t.n_neck
    neck = _thin(pix[:, t.num_head:].reshape(c, n_y, t.n_neck, 2))
    # Facing test on the undeformed directions (same rotation as render.rotate); the margin
    # keeps points a deformation may turn toward the camera.
    z2 = (t.Z * math.cos(y) - t.X * math.sin(y)) * math.cos(p) - t.Y * math.sin(p)
    # Framing (as render.View's shifts): the frame follows the face centre as the head turns.
    cu = FRAME_CENTER_Z * math.sin(y)
    cw = FRAME_CENTER_Y * math.cos(p) + FRAME_CENTER_Z * math.cos(y) * math.sin(p)
    inside = (((u / px_per_unit - cu).abs() <= reach) & ((w / px_per_unit - cw).abs() <= reach)).any(0)
    return torch.nonzero(torch.cat([head, neck]) & (z2 > -0.15) & inside).flatten()
