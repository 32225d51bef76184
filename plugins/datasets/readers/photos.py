"""Unlabelled photos of one person: every image under ``ROOT`` (any folders, recursively) is
one sample of subject ``subject``, with no expression label and unknown pose. This is the
target data ``facedapt adapt`` personalizes a trained model to.

With ``detect`` (default) each photo's largest face is found with OpenCV's Haar cascade and
cropped with a margin, as ``facedapt predict`` crops faces, so that the model adapts to faces
rather than to whole pictures; a photo without a face is listed as a problem and left out.
Without OpenCV, ``detect`` stops with one line; ``detect: false`` takes each photo's center
square as its face (for photos already cropped to the face)."""

from __future__ import annotations

from typing import Any

import attrs
from facedapt_plugins.datasets.readers.common import (
    Reader,
    Record,
    Reporter,
    is_image,
    list_files,
)
from PIL import Image

from facedapt.engine.faces import INSTALL_HINT, find_faces, opencv_available
from facedapt.errors import DataError, UsageError


@attrs.define
class Photos(Reader):
    """A plain folder of one person's face photos (unlabelled)."""

    name = "photos"
    layout = "ROOT/**/<image> (face photos of one person, any folders)"

    subject: str = attrs.field(default="person", kw_only=True, converter=str)
    detect: bool = attrs.field(default=True, kw_only=True)

    def records(self, report: Reporter) -> list[Record]:
        if self.detect and not opencv_available():
            raise UsageError(f"finding faces in photos needs OpenCV ({INSTALL_HINT}); or set detect: false "
                             "(--no-detect) for photos already cropped to the face")
        out: list[Record] = []
        for path in list_files(self.root):
            if not is_image(path):
                report.note(path, "not an image file; ignored")
                continue
            source: Any = path
            if self.detect:
                try:
                    faces = find_faces(path)
                except DataError as exc:
                    report.bad(path, str(exc).removeprefix(f"{path}: "))
                    continue
                if not faces:
                    report.note(path, "no face found; left out")
                    continue
                pixels = faces[0].pixels.permute(1, 2, 0).numpy()  # the largest face
                source = lambda pixels=pixels: Image.fromarray(pixels)  # noqa: E731
            out.append(Record(path=str(path), source=source, subject=self.subject))
        return out
