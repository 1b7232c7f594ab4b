"""After a crash: :func:`recover` (HDF5's ``h5clear -s``) and the writer's lock that guards it.

A file whose writer died carries HDF5's "open for writing" mark; SWMR readers
open it as it is, and :func:`recover` clears the mark so that every HDF5 reader
does.  It calls HDF5's own library (the copy h5py loaded, through ``ctypes``)
because h5py has no API for HDF5's ``clear_status_flags`` access property.
A live writer holds a record lock on one byte of its file while it writes
(:func:`lock_writer_byte`), and :func:`recover` refuses while it is held.
"""

from __future__ import annotations

import ctypes
import glob
import os
import struct
from pathlib import Path

from nwb_dask.atomic import open_here

__all__ = ["WRITER_LOCK_OFFSET", "clear_status_flags", "hdf5_library", "held_for_writing_here", "lock_writer_byte",
           "recover"]


#: A byte no HDF5 file reaches: a StreamWriter holds a record lock on it while it
#: writes, and recover() refuses while it is held.  (HDF5's own lock cannot tell:
#: HDF5 drops it once SWMR writing starts, so that readers can open the file.)
WRITER_LOCK_OFFSET = 2**62


def lock_writer_byte(fd: int) -> None:
    """Take the writer's lock on ``fd`` (open for writing) without waiting; OSError if it is held.

    Linux open-file-description locks belong to this descriptor, not to the
    process (closing another descriptor of the file does not drop them) and do
    not interact with HDF5's flock(); elsewhere, POSIX record locks.  The kernel
    drops them when the process dies, SIGKILL included.
    """
    import fcntl

    if hasattr(fcntl, "F_OFD_SETLK") and struct.calcsize("l") == 8:  # struct flock of 64-bit Linux
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET,
                                                        WRITER_LOCK_OFFSET, 1, 0))
    else:  # pragma: no cover - not Linux
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, WRITER_LOCK_OFFSET)


def hdf5_library() -> ctypes.CDLL:
    """The HDF5 library h5py itself uses (found in this process's memory map, or next to h5py)."""
    import h5py

    def is_hdf5(p: str) -> bool:
        name = os.path.basename(p)
        return name.startswith("libhdf5") and not name.startswith("libhdf5_hl") and (".so" in name or ".dylib" in name)

    candidates: list[str] = []
    try:
        with open("/proc/self/maps") as maps:  # Linux: the copy already loaded
            for line in maps:
                p = line.split()[-1]
                if is_hdf5(p) and p not in candidates:
                    candidates.append(p)
    except OSError:  # not Linux
        pass
    base = os.path.dirname(h5py.__file__)
    for pattern in ("../h5py.libs/libhdf5*", ".dylibs/libhdf5*"):  # the copy bundled with the wheel
        candidates += [p for p in sorted(glob.glob(os.path.join(base, pattern))) if is_hdf5(p)]
    for cand in candidates:
        try:
            lib = ctypes.CDLL(cand)
            lib.H5Pset  # noqa: B018 - check the symbol
            return lib
        except (OSError, AttributeError):
            continue
    raise OSError("could not locate the HDF5 library h5py uses; run HDF5's `h5clear -s FILE` instead")


def recover(path: str | os.PathLike) -> None:
    """Clear the "open for writing" mark a killed writer left, so every HDF5 reader opens the file.

    This is ``h5clear -s``: the file's contents are not changed, and the data
    are those of the writer's last completed flush.  It refuses a file that a
    live writer still holds open.

    Raises
    ------
    FileNotFoundError
        No such file.
    OSError
        The file is open by a writer, or is not an HDF5 1.10+ file.
    """
    import h5py
    from h5py import h5f

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    held = held_for_writing_here(path)  # HDF5 would share this process's open file
    if held is None:  # no /proc: ask HDF5 (see held_for_writing_here on why not everywhere)
        held = any(_same_file(fid, path) and fid.get_intent() & h5f.ACC_RDWR
                   for fid in h5f.get_obj_ids(types=h5f.OBJ_FILE))
    if held:
        raise OSError(f"{path}: cannot clear the writer's mark; a writer in this process holds it open")
    lock_fd = os.open(path, os.O_RDWR)
    try:
        try:
            lock_writer_byte(lock_fd)  # held until the marks are cleared
        except OSError as exc:
            raise OSError(f"{path}: a StreamWriter (in this or another process) is still writing it; "
                          "recover is for a file whose writer died") from exc
        clear_status_flags(path)
    finally:
        os.close(lock_fd)
    with h5py.File(path, "r"):
        pass  # plain readers open it now


def held_for_writing_here(path: Path) -> bool | None:
    """Whether this process holds ``path`` open for writing; ``None`` where ``/proc/self`` is missing.

    :func:`nwb_dask.atomic.open_here` (by descriptors, not by walking HDF5's
    open files, which crashed the interpreter in ``recover`` under load).
    """
    return open_here(path, writing=True)


def _same_file(fid, path: Path) -> bool:
    try:
        return os.path.samefile(fid.name, path)
    except OSError:
        return False


def clear_status_flags(path: Path) -> None:
    """HDF5's ``h5clear -s``."""
    from h5py import h5f, h5p

    lib = hdf5_library()
    lib.H5Pset.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    lib.H5Pset.restype = ctypes.c_int
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_V110, h5f.LIBVER_LATEST)
    flag = ctypes.c_bool(True)
    # HDF5's private "clear_status_flags" access property is what h5clear sets; h5py has no API for it.
    if lib.H5Pset(fapl.id, b"clear_status_flags", ctypes.byref(flag)) < 0:
        raise OSError(f"{path}: this HDF5 cannot clear status flags; run `h5clear -s {path}`")
    try:
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDWR, fapl=fapl)
    except OSError as exc:
        raise OSError(f"{path}: cannot clear the writer's mark ({exc})") from exc
    fid.close()
