"""Readers for the real face datasets in their official layouts (see docs/datasets.md).

Each factory is a reader class; its keyword arguments are what a recipe's ``data.dataset``
may pass, and the object it builds is a :class:`facedapt.data.DatasetSource`.
"""

from __future__ import annotations

from typing import Any

from facedapt_plugins.datasets.readers.bu3dfe import BU3DFE
from facedapt_plugins.datasets.readers.ckplus import CKPlus
from facedapt_plugins.datasets.readers.fer2013 import FER2013
from facedapt_plugins.datasets.readers.image_folder import ImageFolder
from facedapt_plugins.datasets.readers.jaffe import JAFFE
from facedapt_plugins.datasets.readers.kdef import KDEF
from facedapt_plugins.datasets.readers.manifest import Manifest
from facedapt_plugins.datasets.readers.multipie import MultiPIE
from facedapt_plugins.datasets.readers.photos import Photos
from facedapt_plugins.datasets.readers.rafd import RaFD
from facedapt_plugins.datasets.readers.rafdb import RAFDB

from facedapt import hookimpl

READERS = (MultiPIE, BU3DFE, KDEF, RaFD, CKPlus, JAFFE, FER2013, RAFDB, Manifest, ImageFolder, Photos)

__all__ = ["READERS", "facedapt_register_datasets", *(cls.__name__ for cls in READERS)]


@hookimpl
def facedapt_register_datasets(registry: Any) -> None:
    for cls in READERS:
        registry.register(cls.name, cls)
