"""nwb_dask's version: one place, at layer 0, so the cluster check (:mod:`nwb_dask.cluster`) can compare it."""

__all__ = ["__version__"]

#: Kept equal to pyproject.toml's ``version`` (tests/test_packaging.py).
__version__ = "0.1.0"
