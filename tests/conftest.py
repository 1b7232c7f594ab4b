"""Shared test helpers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

_PLAIN_READER = textwrap.dedent(
    """
    import sys
    import hdf5plugin  # plugin filters, as a plain user would import them
    import numpy as np
    from pynwb import NWBHDF5IO, validate

    path, name, out = sys.argv[1:4]
    with NWBHDF5IO(path, "r") as io:
        nwbfile = io.read()
        data = nwbfile.acquisition[name].data[()]
    assert not any(m.startswith("nwb_dask") for m in sys.modules), "nwb_dask was imported"
    errors = validate(path=path)
    if errors:
        raise SystemExit("validation errors: %r" % (errors,))
    np.save(out, data)
    """
)


def read_with_plain_pynwb(path: str | Path, name: str, tmp_path: Path) -> np.ndarray:
    """Read ``acquisition[name].data`` in a fresh interpreter with only pynwb (and hdf5plugin).

    Also runs pynwb's validator there; fails the test on validation errors.
    """
    out = tmp_path / f"{name}.npy"
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN_READER, str(path), name, str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    if proc.returncode:
        pytest.fail(f"plain pynwb could not read {path}: {proc.stderr[-3000:]}")
    return np.load(out)
