"""Errors the CLI turns into one line and an exit code (2: usage or data, 1: runtime)."""

from __future__ import annotations


class FacedaptError(Exception):
    """Base class: a problem the user can act on; the CLI prints it without a traceback."""

    exit_code = 1


class UsageError(FacedaptError):
    """Bad command line, recipe key or value."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe problem; the message names the file, the key path and the bad value."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.key = file, key


class DataError(UsageError):
    """Bad or missing data; the message names the file."""


class PluginError(FacedaptError):
    """A plugin failed to load or registered a clashing name."""

    exit_code = 2


class CheckpointError(UsageError):
    """A checkpoint that is missing, corrupt or from a different recipe."""


class StorageError(FacedaptError):
    """A file could not be written (disk full, read-only file system); the file it was to
    replace is left as it was."""


class NumericalError(FacedaptError):
    """A NaN or Inf loss under the `abort` policy."""


class Interrupted(FacedaptError):
    """SIGINT or SIGTERM: a checkpoint was saved; the message says how to resume."""

    exit_code = 130
