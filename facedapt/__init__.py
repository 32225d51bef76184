"""facedapt: pose-aware adversarial domain adaptation for personalized facial expression recognition."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from facedapt.hookspecs import hookimpl, hookspec

try:
    __version__ = version("facedapt")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

__all__ = ["__version__", "hookimpl", "hookspec"]
