"""Data errors that name the culprit: file, demo and key."""

from __future__ import annotations


class DataError(Exception):
    """A problem with demonstration data, located as precisely as known."""

    def __init__(
        self, message: str, *, file: str | None = None, demo: str | None = None, key: str | None = None
    ):
        self.file, self.demo, self.key, self.detail = file, demo, key, message
        super().__init__(self._format())

    def _format(self) -> str:
        where = ":".join(p for p in (self.file, self.demo, self.key) if p)
        return f"{where}: {self.detail}" if where else self.detail


class DataFormatError(DataError):
    """The file exists but is not HDF5, is truncated/corrupt, or has a layout no reader knows."""


class EmptyDatasetError(DataError):
    """Nothing is left to train on (no files matched, or every demo was filtered out)."""
