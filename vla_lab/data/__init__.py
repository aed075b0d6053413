"""Data layer: the demonstration format, readers (ours and LIBERO's), statistics, DataModules.

Heavy modules (torch, Lightning) load on first use of ``DemoDataModule``/``LiberoDataModule``.
"""

from vla_lab.data.errors import DataError, DataFormatError, EmptyDatasetError
from vla_lab.data.format import ActionSpace
from vla_lab.data.reader import DemoSource, EpisodeRef
from vla_lab.data.writer import DemoWriter

__all__ = [
    "ActionSpace",
    "DataError",
    "DataFormatError",
    "DemoDataModule",
    "DemoSource",
    "DemoWriter",
    "EmptyDatasetError",
    "EpisodeRef",
    "LiberoDataModule",
]


def __getattr__(name: str):
    if name in ("DemoDataModule", "LiberoDataModule"):
        from vla_lab.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(name)
