"""A job for tests/test_any_shape.py: ``mpiexec -n N python tests/any_shape_mpi_job.py OUT``.

Reads ``spec.json`` beside OUT (arrays as shape, dtype, dask block sizes and
seed; one codec), builds the same dask arrays on every rank with
:func:`values`, and writes them with ``nwb_dask.mpi.write`` in funnel mode:
as a mapping to OUT (datasets ``d0``, ``d1``, ...), and as an NWBFile of
``DaskDataIO`` TimeSeries (``acquisition/d0/data``, ...) to OUT with suffix ``.nwb``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np


def values(shape, dtype, seed: int) -> np.ndarray:
    """Deterministic data of any dtype (the same on every rank and in the test)."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    if dtype.kind == "b":
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        native = dtype.newbyteorder("=")
        return rng.integers(info.min, info.max, n, dtype=native, endpoint=True).astype(dtype).reshape(shape)
    x = rng.standard_normal(n) * 100
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(n)
    return x.astype(dtype).reshape(shape)


def main() -> None:
    import dask.array as da

    import nwb_dask.mpi

    out = Path(sys.argv[1])
    spec = json.loads((out.parent / "spec.json").read_text())
    codec = spec["codec"] if isinstance(spec["codec"], str) else tuple(spec["codec"])
    data = {
        f"d{i}": da.from_array(values(tuple(a["shape"]), a["dtype"], a["seed"]),
                               chunks=tuple(tuple(c) for c in a["chunks"]))
        for i, a in enumerate(spec["arrays"])
    }
    nwb_dask.mpi.write(data, out, mode="funnel", codec=codec, timeout=120)

    from datetime import datetime, timezone

    from pynwb import NWBFile, TimeSeries

    nwb = NWBFile(session_description="any shape", identifier="any-shape-mpi",
                  session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    for name, array in data.items():
        nwb.add_acquisition(TimeSeries(name=name, data=nwb_dask.DaskDataIO(array, codec=codec), unit="au", rate=10.0))
    nwb_dask.mpi.write(nwb, out.with_suffix(".nwb"), mode="funnel", timeout=120)


if __name__ == "__main__":
    main()
