"""Landmark layouts the augmentations understand, and their left/right tables.

Layouts (chosen by the number of points K):

- 68 points: the iBUG 300-W / Multi-PIE layout (0-16 jaw, 17-26 brows, 27-35 nose,
  36-41 and 42-47 eyes, 48-67 mouth). Indices 36-41 are the subject's right eye, which
  appears on the image left in a frontal view.
- 5 points: the MTCNN / ArcFace layout, in image order for a frontal face: image-left eye
  centre, image-right eye centre, nose tip, image-left mouth corner, image-right mouth corner.
  Image left is the subject's right: point 0 is the subject's right eye (68-point 36-41).

A flip permutation ``perm`` is used as ``flipped = mirrored[:, perm]``: after mirroring x,
point ``perm[i]`` is the one that now plays the role of point ``i``. Every table is its own
inverse, so two flips give the input back.
"""

from __future__ import annotations

import torch

FLIP_PERM_68: tuple[int, ...] = (
    # jaw 0..16 reversed
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
    # brows 17..21 <-> 26..22
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
    # nose bridge 27..30 on the midline
    27, 28, 29, 30,
    # nostrils 31..35, 33 on the midline
    35, 34, 33, 32, 31,
    # eyes: 36..41 <-> 45, 44, 43, 42, 47, 46 (corners and lids keep their roles)
    45, 44, 43, 42, 47, 46,
    39, 38, 37, 36, 41, 40,
    # outer lip 48..59: corners 48 <-> 54, 51 and 57 on the midline
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
    # inner lip 60..67: corners 60 <-> 64, 62 and 66 on the midline
    64, 63, 62, 61, 60, 67, 66, 65,
)

FLIP_PERM_5: tuple[int, ...] = (1, 0, 2, 4, 3)

FLIP_PERMS: dict[int, tuple[int, ...]] = {68: FLIP_PERM_68, 5: FLIP_PERM_5}

#: Five-point indices inside the 68-point layout: (eye point ranges, nose tip, mouth corners).
EYE_68: tuple[range, range] = (range(36, 42), range(42, 48))
NOSE_TIP_68 = 30
MOUTH_CORNERS_68: tuple[int, int] = (48, 54)

#: ArcFace 5-point template in a 112 x 112 crop, divided by 112 (x, y in [0, 1]).
TEMPLATE_5: tuple[tuple[float, float], ...] = (
    (38.2946 / 112, 51.6963 / 112),
    (73.5318 / 112, 51.5014 / 112),
    (56.0252 / 112, 71.7366 / 112),
    (41.5493 / 112, 92.3655 / 112),
    (70.7299 / 112, 92.2041 / 112),
)


def flip_permutation(num_points: int) -> tuple[int, ...]:
    """The left/right table for a layout of ``num_points`` points (ValueError if unknown)."""
    try:
        return FLIP_PERMS[num_points]
    except KeyError:
        raise ValueError(
            f"no left/right table for {num_points} landmarks (known layouts: 68-point iBUG, 5-point); "
            "pass permutation= to the flip augmentation"
        ) from None


def five_points(landmarks: torch.Tensor) -> torch.Tensor:
    """[..., 5, 2] in the 5-point layout from a 5- or 68-point [..., K, 2]: the subject's right
    eye centre (image left), left eye centre (image right), nose tip, right and left mouth corner.
    Eye centres are the means of the eye contours."""
    k = landmarks.shape[-2]
    if k == 5:
        return landmarks
    if k == 68:
        right_eye = landmarks[..., EYE_68[0].start:EYE_68[0].stop, :].mean(dim=-2)  # 36-41
        left_eye = landmarks[..., EYE_68[1].start:EYE_68[1].stop, :].mean(dim=-2)  # 42-47
        return torch.stack(
            [right_eye, left_eye, landmarks[..., NOSE_TIP_68, :],
             landmarks[..., MOUTH_CORNERS_68[0], :], landmarks[..., MOUTH_CORNERS_68[1], :]],
            dim=-2,
        )
    raise ValueError(f"cannot derive the 5-point layout from {k} landmarks (need 5 or 68)")


if __debug__:  # cheap import-time check that every table is an involution
    for _perm in FLIP_PERMS.values():
        assert sorted(_perm) == list(range(len(_perm))) and all(_perm[p] == i for i, p in enumerate(_perm))
