"""A tiny dataset plugin for engine tests: bright patterns whose position is the expression
and whose horizontal shift is the pose, for a few subjects with their own offsets."""

from __future__ import annotations

import hashlib

import torch

from facedapt import hookimpl
from facedapt.data.samples import Samples


class ToyFaces:
    name = "toy"

    def __init__(self, subjects: int = 6, per_class: int = 6, image_size: int = 16, classes: int = 3) -> None:
        self.subjects, self.per_class, self.image_size, self.classes = subjects, per_class, image_size, classes

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(vars(self)).encode()).hexdigest()

    def load(self) -> Samples:
        g = torch.Generator().manual_seed(0)
        s, n, classes = self.image_size, self.per_class, self.classes
        images, expr, subj, yaw, capture = [], [], [], [], []
        yaws = [-30.0, 0.0, 30.0]
        for sid in range(self.subjects):
            for c in range(classes):
                for i in range(n):
                    y = yaws[i % 3]
                    img = torch.rand(1, s, s, generator=g) * 40
                    row = 2 + c * (s - 4) // classes
                    col = s // 2 + int(y / 15) + (sid % 3) - 1
                    img[0, row:row + 3, max(0, col - 2):col + 2] += 200
                    images.append(img.clamp(0, 255).to(torch.uint8))
                    expr.append(c)
                    subj.append(sid)
                    yaw.append(y)
                    capture.append((sid * classes + c) * 100 + i // 3)
        return Samples(images=torch.stack(images), expression=torch.tensor(expr), subject=torch.tensor(subj),
                       subject_ids=tuple(f"T{i:02d}" for i in range(self.subjects)), dataset="toy",
                       yaw=torch.tensor(yaw), capture=torch.tensor(capture))


@hookimpl
def facedapt_register_datasets(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("toy", ToyFaces)
