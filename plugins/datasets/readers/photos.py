"""Unlabelled photos of one person: every image under ``ROOT`` (any folders, recursively) is
one sample of subject ``subject``, with no expression label and unknown pose. This is the
target data ``facedapt adapt`` personalizes a trained model to."""

from __future__ import annotations

import attrs
from facedapt_plugins.datasets.readers.common import (
    Reader,
    Record,
    Reporter,
    is_image,
    list_files,
)


@attrs.define
class Photos(Reader):
    """A plain folder of one person's face photos (unlabelled)."""

    name = "photos"
    layout = "ROOT/**/<image> (face photos of one person, any folders)"

    subject: str = attrs.field(default="person", kw_only=True, converter=str)

    def records(self, report: Reporter) -> list[Record]:
        out: list[Record] = []
        for path in list_files(self.root):
            if not is_image(path):
                report.note(path, "not an image file; ignored")
                continue
            out.append(Record(path=str(path), source=path, subject=self.subject))
        return out
