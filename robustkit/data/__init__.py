"""Data: the canonical :class:`Sample`, real-format loaders, the prepared HDF5 format, the built-in dataset."""

from robustkit.data.sample import Sample

__all__ = ["Sample"]
