#!/usr/bin/env bash
# Build a virtual environment whose h5py and mpi4py use Debian's parallel HDF5 (MPICH),
# for nwb_dask's collective MPI mode (docs/mpi.md).
#
#   scripts/install-parallel-h5py.sh [VENV]      (default VENV: .venv-mpi)
#
# Run collective jobs with Debian's launcher: /usr/bin/mpiexec.mpich -n 4 VENV/bin/python ...
# Needs root (or sudo) for apt-get, and about 6 minutes: h5py (~2.5 min) and mpi4py
# (~3.5 min) are compiled against the same MPICH, because an mpi4py wheel brings its
# own MPI library and the two would not share a communicator.
set -euo pipefail
VENV=${1:-.venv-mpi}
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

if ! dpkg -s libhdf5-mpich-dev mpich >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhdf5-mpich-dev mpich pkg-config
fi

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "setuptools>=77" packaging cython pkgconfig numpy wheel
# Debian's MPICH compiler wrapper by its full name: an `mpicc` earlier on PATH (e.g. from
# `pip install mpich`) would link mpi4py against a different MPI than Debian's HDF5 uses.
MPICC=/usr/bin/mpicc.mpich
# mpi4py first: h5py's MPI build imports it.
MPICC=$MPICC "$VENV/bin/python" -m pip install -q --no-cache-dir --no-binary=mpi4py --no-build-isolation mpi4py
CC=$MPICC HDF5_MPI=ON HDF5_PKGCONFIG_NAME=hdf5-mpich \
    "$VENV/bin/python" -m pip install -q --no-cache-dir --no-binary=h5py --no-build-isolation h5py
"$VENV/bin/python" - <<'PY'
import h5py
from mpi4py import MPI
assert h5py.get_config().mpi, "h5py was built without MPI"
assert "MPICH" in MPI.Get_library_version() and h5py.version.hdf5_version.startswith("1.10"), "unexpected MPI/HDF5"
print("parallel h5py", h5py.version.version, "HDF5", h5py.version.hdf5_version, "|", MPI.Get_library_version().splitlines()[0])
PY
