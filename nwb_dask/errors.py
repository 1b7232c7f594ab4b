"""Errors that name what is at fault, and the one way nwb_dask opens an input file.

h5py's own message for a path that is not an HDF5 file is "Unable to
synchronously open file (file signature not found)": no path, nothing about
what was expected, the same for a text file, a truncated download and a web
server's HTML page.  :func:`open_hdf5` opens every HDF5 input nwb_dask reads
(local paths and the remote file views of :mod:`nwb_dask.sources`) and turns
that into a :class:`NotHDF5Error` that names the path or URL, shows the first
bytes and says what was expected; :func:`check_input_file` does the same for
tools that hand the path on to pynwb, and also refuses directories (pointing
Zarr stores to ``nwb-dask convert``) and, with ``nwb=True``, HDF5 files without
NWB content.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["NotHDF5Error", "NotNWBError", "VerificationError", "check_input_file", "open_hdf5", "reworded"]

#: The HDF5 format signature (at offset 0, or 512, 1024, ... after a user block).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_HEAD = 32  # bytes shown in messages


class NotHDF5Error(OSError):
    """A path or URL that was expected to be an HDF5 (NWB) file is not one (message names it)."""


class NotNWBError(ValueError):
    """An HDF5 file without NWB content where an NWB file is needed (message names it)."""


class VerificationError(ValueError):
    """A written copy differs from its source: a check failed (the CLI exits with status 1)."""


def _is_html(head: bytes) -> bool:
    start = head.lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in start[:512]


def not_hdf5_message(where: str, head: bytes, *, remote: bool = False) -> str:
    """``where: cannot open as HDF5/NWB: <why>``, from the first bytes of the file or of the server's reply."""
    shown = head[:_HEAD]
    if not head:
        why = "the file is empty"
    elif _is_html(head) and remote:
        why = f"the server returned an HTML page (starts with {shown!r}), not the file; check the URL"
    elif _is_html(head):
        why = f"the file is an HTML page (starts with {shown!r}; a download that saved a web page?)"
    else:
        why = f"file signature not found (first bytes {shown!r})"
    return f"{where}: cannot open as HDF5/NWB: {why}; expected an NWB (HDF5) file, which starts with {HDF5_SIGNATURE!r}"


def directory_message(path: str) -> str:
    """What to say about a directory given where an HDF5 file is expected."""
    text = f"{path} is a directory, not an HDF5/NWB file"
    if looks_like_zarr(path):
        text += (f"; it looks like a Zarr store (NWB-Zarr): convert it with `nwb-dask convert {path} OUT.nwb`, "
                 "or read it with nwb_dask.read_nwb")
    return text


def looks_like_zarr(path: str | os.PathLike) -> bool:
    """Whether a directory holds Zarr metadata (a v2 ``.zgroup``/``.zarray`` or a v3 ``zarr.json``)."""
    return any(os.path.exists(os.path.join(path, name)) for name in (".zgroup", ".zarray", "zarr.json"))


def _signature_error(exc: OSError) -> bool:
    return "file signature not found" in str(exc)


def _local_head(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1024)
    except OSError:  # pragma: no cover - unreadable after h5py read it
        return b""


def _naming(exc: OSError, where: str) -> OSError:
    """h5py's other open errors ("file is already open for write", ...), with the path or URL in front."""
    if where in str(exc):
        return exc
    text = f"{where}: cannot open as HDF5/NWB: {exc}"
    if "already open for write" in str(exc):
        text += "; a live writer holds it, or was killed (then `nwb-dask recover FILE` clears the mark)"
    return reworded(exc, text)


def reworded(exc: OSError, text: str) -> OSError:
    """An OSError of the same type and errno as ``exc`` with the message ``text`` (raise it ``from exc``)."""
    try:
        new = type(exc)(text)
    except TypeError:  # an OSError subclass with its own constructor
        new = OSError(text)
    new.errno = exc.errno
    return new


def open_hdf5(target: Any, mode: str = "r", *, name: str | None = None, **kwargs: Any):
    """``h5py.File(target, mode, **kwargs)`` with errors that name the path or URL.

    Parameters
    ----------
    target : str, PathLike or file object
        A local path, or a file object (e.g. a remote view from
        :meth:`nwb_dask.sources.base.ByteSource.open`).
    name : str, optional
        What to call ``target`` in messages (the URL of a file object);
        default the path.

    Raises
    ------
    FileNotFoundError
        No such local file.
    IsADirectoryError
        A directory (a Zarr store is pointed to ``nwb-dask convert``).
    NotHDF5Error
        Not an HDF5 file (an HTML page from a server is called one).
    """
    import h5py

    local = isinstance(target, (str, os.PathLike))
    where = name or (os.fspath(target) if local else repr(target))
    if local and mode == "r":
        path = os.fspath(target)
        if os.path.isdir(path):
            raise IsADirectoryError(directory_message(path))
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
    try:
        return h5py.File(target, mode, **kwargs)
    except OSError as exc:
        if not _signature_error(exc):
            raise _naming(exc, where) from exc
        if local:
            head = _local_head(os.fspath(target))
        else:
            target.seek(0)
            head = target.read(1024)
        raise NotHDF5Error(not_hdf5_message(where, head, remote=not local)) from None


def check_input_file(path: str | os.PathLike, *, nwb: bool = False, tool: str | None = None) -> None:
    """Check that ``path`` is an HDF5 file (with NWB content when ``nwb``); raise a named error if not.

    For tools that pass the path on to pynwb or h5py themselves, so the
    problem is reported as :func:`open_hdf5` reports it instead of as the
    library's message without the path.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, NotHDF5Error
        As :func:`open_hdf5`.
    NotNWBError
        ``nwb`` and the file has no ``nwb_version`` attribute (plain HDF5).
    """
    with open_hdf5(path) as f:
        if nwb and "nwb_version" not in f.attrs:
            what = f"; {tool} needs an NWB file" if tool else ""
            raise NotNWBError(f"{os.fspath(path)} is an HDF5 file without NWB content (no nwb_version attribute "
                              f"at /){what}; for plain HDF5 use h5repack / h5py")
