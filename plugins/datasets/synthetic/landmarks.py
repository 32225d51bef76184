"""The 68 iBUG/300-W landmarks of a capture, placed on the deformed 3D head.

Index order (image as seen frontally; "right" is the subject's right, the image's left):
0-16 jaw line from the right ear to the chin (8) to the left ear; 17-21 right brow (outer to
inner); 22-26 left brow (inner to outer); 27-30 nose bridge (top to tip); 31-35 nose base
(right to left); 36-41 right eye (36 outer corner, 37-38 upper lid, 39 inner corner, 40-41
lower lid); 42-47 left eye (42 inner corner, 43-44 upper lid, 45 outer corner, 46-47 lower
lid); 48-59 outer lips (48 right corner, 49-53 upper lip, 54 left corner, 55-59 lower lip);
60-67 inner lips (60 right corner, 61-63 upper, 64 left corner, 65-67 lower).
"""

from __future__ import annotations

import math

import torch

from .face import ASPECT, EYE_Q, MOUTH_Q, FaceShape, brow_height, head_points, mouth_curves

NUM_LANDMARKS = 68
def _jaw_directions() -> tuple[torch.Tensor, torch.Tensor]:
    gamma = torch.linspace(0, math.pi, 17, dtype=torch.float64)
    return (-0.95 * gamma.cos()).float(), (0.12 - 1.0 * gamma.sin()).float()


_JAW_X, _JAW_Y = _jaw_directions()


def landmarks_3d(f: FaceShape) -> torch.Tensor:
    """[B, 68, 3] head-space landmark positions of B captures."""
    b = f.ex.shape[0]
    ones = torch.ones(b, 1)
    P: list[torch.Tensor] = []
    Q: list[torch.Tensor] = []

    def add(p: torch.Tensor, q: torch.Tensor) -> None:
        P.append(p * ones)
        Q.append(q * ones)

    add(ASPECT * _JAW_X[None], _JAW_Y[None])  # 0-16
    for sign, us in ((-1.0, (1.0, 0.5, 0.0, -0.5, -1.0)), (1.0, (-1.0, -0.5, 0.0, 0.5, 1.0))):  # 17-26
        u = torch.tensor(us)[None]
        add(sign * (f.ex + u * f.bw - 0.045 * f.brow_lower), brow_height(u, f))
    k = torch.arange(4, dtype=torch.float32)[None] / 3  # 27-30
    add(0.0 * k, EYE_Q + (f.ny - EYE_Q) * k)
    base = torch.tensor([-0.06, -0.03, 0.0, 0.03, 0.06])[None]  # 31-35
    add(base * f.nose_width, f.ny - 0.045 + f.nostril_up - torch.tensor([0, 0.005, 0.01, 0.005, 0])[None])
    third = 1.0 / 3.0
    for sign, order in ((-1.0, "right"), (1.0, "left")):  # 36-41, 42-47
        lid = 1 - third * third
        if order == "right":  # outer, upper x2, inner, lower x2 (outer is further from the midline)
            dx = torch.tensor([1.0, third, -third, -1.0, -third, third])[None]
            up = torch.tensor([0.0, 1, 1, 0, -1, -1])[None]
        else:  # inner, upper x2, outer, lower x2
            dx = torch.tensor([-1.0, -third, third, 1.0, third, -third])[None]
            up = torch.tensor([0.0, 1, 1, 0, -1, -1])[None]
        dy = torch.where(up > 0, f.eu * lid, torch.where(up < 0, -f.el * lid, 0 * f.eu))
        add(sign * (f.ex + dx * f.ew), EYE_Q + dy)
    # Mouth: evaluate the same curves the texture uses.
    outer_t = torch.tensor([-1.0, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])[None]
    inner_t = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 0.5, 0.0, -0.5])[None]
    for ts, n_upper in ((outer_t, 7), (inner_t, 5)):
        p = ts * f.mw * 0.999  # just inside the corner so the side is chosen right
        top, bottom, lip_top, lip_bottom, _ = mouth_curves(p, f)
        upper = torch.arange(ts.shape[1])[None] < n_upper
        if ts is outer_t:
            q = torch.where(upper, lip_top, lip_bottom)
        else:
            q = torch.where(upper, top, bottom)
        corner = (ts.abs() == 1.0)
        q = torch.where(corner, (top + bottom) / 2, q)
        add(p, q)
    Pc, Qc = torch.cat(P, 1), torch.cat(Q, 1)
    X = Pc / ASPECT
    Z = (1 - X * X - Qc * Qc).clamp(min=0.0025).sqrt()
    return head_points(X, Qc, Z, f)


__all__ = ["NUM_LANDMARKS", "landmarks_3d", "MOUTH_Q"]
