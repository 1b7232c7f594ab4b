"""Outputs that appear whole or not at all, and appends that are undone when they fail.

Every nwb_dask writer of a new file or store (:class:`~nwb_dask.io.NWBDaskIO`
in modes ``"w"``/``"w-"``/``"x"``, :func:`~nwb_dask.repack`,
:func:`~nwb_dask.convert`, :func:`~nwb_dask.write_nwb_zarr`,
:func:`~nwb_dask.consolidate`, :func:`nwb_dask.mpi.write`, the live
writer's creation) goes through :class:`AtomicOutput`:

* the output is built under the hidden name :func:`partial_path` gives
  (``.NAME.<8 hex>.partial.SUFFIX``) in the target's directory;
* when complete it is ``fsync``\\ ed, renamed onto the target (atomic within a
  file system) and the directory is ``fsync``\\ ed;
* on any error, Ctrl-C (``KeyboardInterrupt``) or SIGTERM the temporary is
  removed and the target is left as it was.  SIGTERM (how batch systems stop
  jobs) is turned into :class:`Terminated`, a ``SystemExit`` with status 143,
  in the main thread while an output is open, so the same cleanup runs; a
  SIGTERM handler of the program's own is called instead (chained), and the
  previous handler is restored afterwards;
* a disk that fills up is reported as ``OSError(ENOSPC)`` naming the target.

Only SIGKILL (or a power loss) can leave a temporary behind:
:func:`find_partials` lists them and :func:`remove_partials` deletes them.

Mode ``"a"`` appends (:class:`AppendJournal`) write into the user's file in
place (a copy of a TB file per append would be too costly): the journal
records the file's objects, attributes and dataset shapes before the append,
and after a failure deletes what the append created and restores what it
changed, so the file reads as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

__all__ = ["AppendJournal", "AtomicOutput", "Terminated", "check_output", "find_partials", "interrupted", "open_here",
           "partial_path", "remove_partials", "same_path"]

#: What :func:`partial_path` names look like: ``.NAME.<8 hex>.partial.SUFFIX``.
PARTIAL_PATTERN = re.compile(r"^\.(?P<stem>.+)\.(?P<token>[0-9a-f]{8})\.partial(?P<suffix>(\.[^./]+)?)$")


def partial_path(target: str | os.PathLike) -> Path:
    """The hidden temporary name next to ``target`` (``.NAME.<hex>.partial.SUFFIX``) that atomic writers build under.

    Every nwb_dask output that appears atomically (``NWBDaskIO``, consolidate,
    repack, convert, write_nwb_zarr, MPI writes, live files) is written here
    and renamed to ``target`` only when complete.
    """
    target = Path(target)
    return target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.partial{target.suffix}")


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or store: the same path, a symlink to it, or a hard link."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    except OSError:  # pragma: no cover - vanished between the calls
        pass
    return a.resolve() == b.resolve()


def check_output(output: str | os.PathLike, *, overwrite: bool, tool: str, source: str | os.PathLike | None = None,
                 same_error: type[Exception] = ValueError) -> Path:
    """Check where an atomic writer is to create ``output`` (a file or a Zarr store); returns it absolute.

    The one set of output checks every nwb_dask writer makes before it builds
    its output under :func:`partial_path` (``NWBDaskIO``, repack, convert,
    consolidate, write_nwb_zarr, the MPI writer).  Whether a file may replace
    a directory is decided at the rename (:meth:`AtomicOutput.commit`): only a
    store replaces a store.

    Parameters
    ----------
    output : str or PathLike
    overwrite : bool
        Whether an existing ``output`` may be replaced.
    tool : str
        What writes (named in the messages).
    source : str or PathLike, optional
        The input of a tool that writes a new file from an existing one.
    same_error : exception type
        Raised when ``output`` is ``source``.

    Raises
    ------
    same_error
        The output is the input (same path, symlink or hard link).
    FileExistsError
        The output exists and ``overwrite`` is false.
    FileNotFoundError
        The output's directory does not exist.
    """
    out = Path(output).absolute()
    if source is not None and same_path(source, out):
        raise same_error(f"output {out} is the input file; {tool} writes a new file and never modifies its input")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: output directory {out.parent} does not exist")
    return out


def open_here(path: str | os.PathLike, *, writing: bool = False) -> bool | None:
    """Whether this process holds ``path`` open (for writing, with ``writing=True``); ``None`` where it cannot tell.

    Looked up among this process's open descriptors (``/proc/self/fd``, with
    the access mode from ``/proc/self/fdinfo``; HDF5's sec2 driver keeps one
    descriptor per open file), not through HDF5: walking
    ``h5py.h5f.get_obj_ids`` and asking each file its name or handle crashed
    the interpreter when other threads were closing files (NWBDaskIO's
    "file is open here" check; a segmentation fault in ``live.recover`` under
    load).  ``None``: ``path`` or ``/proc/self`` is missing.
    """
    try:
        st = os.stat(path)
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            opened = os.stat(f"/proc/self/fd/{fd}")
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                continue
            if not writing:
                return True
            with open(f"/proc/self/fdinfo/{fd}") as info:
                flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
        except (OSError, StopIteration, ValueError, IndexError):  # closed meanwhile, or the listing's own descriptor
            continue
        if flags & 3 != os.O_RDONLY:  # O_ACCMODE: O_WRONLY or O_RDWR
            return True
    return False


def find_partials(directory: str | os.PathLike, *, older_than: float = 0.0, recursive: bool = False) -> list[Path]:
    """The temporaries nwb_dask writers left in ``directory`` (only a SIGKILL or a crash leaves them).

    Parameters
    ----------
    directory : str or PathLike
    older_than : float
        Only those not modified for this many seconds (a writer still running
        keeps modifying its temporary).
    recursive : bool
        Look in subdirectories too (not inside the temporaries themselves).

    Returns
    -------
    list of Path
        Files and (Zarr) directories named like :func:`partial_path`, sorted.
        HDF5 temporaries a writer holds open (HDF5's file lock) are left out.
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {root}")
    now = time.time()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            if PARTIAL_PATTERN.match(name):
                path = Path(dirpath) / name
                if (older_than <= 0 or now - path.lstat().st_mtime >= older_than) and not _being_written(path):
                    found.append(path)
        dirnames[:] = [d for d in dirnames if recursive and not PARTIAL_PATTERN.match(d)]
    return sorted(found)


def _being_written(path: Path) -> bool:
    """Whether a writer holds this HDF5 temporary open: HDF5 takes an exclusive ``flock`` on a file it writes.

    (Its file locking is on by default; with ``HDF5_USE_FILE_LOCKING=FALSE``,
    or for Zarr stores, only ``older_than`` spares running writers.)
    """
    import fcntl

    if not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing the descriptor releases a lock taken on it
    return False


def remove_partials(directory: str | os.PathLike, *, older_than: float = 0.0, recursive: bool = False,
                    dry_run: bool = False) -> list[Path]:
    """Delete the temporaries :func:`find_partials` finds; returns them.

    Run it when no nwb_dask writer is writing in ``directory``, or pass
    ``older_than`` (seconds) larger than a writer's pauses; ``dry_run`` only lists.
    """
    found = find_partials(directory, older_than=older_than, recursive=recursive)
    if not dry_run:
        for path in found:
            _remove(path)
    return found


# --------------------------------------------------------------------------- #
# SIGTERM as an exception                                                      #
# --------------------------------------------------------------------------- #
class Terminated(SystemExit):
    """SIGTERM received while an nwb_dask output was open (exit status 128 + 15).

    A ``SystemExit``, so ``except Exception`` does not swallow it, cleanup
    (``finally``, context managers) runs, and an uncaught one ends Python with
    the conventional status 143 and no traceback.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


_guard_lock = threading.Lock()
_guard_depth = 0
_guard_previous: Any = None
_guard_fired = False


def _on_sigterm(signum, frame) -> None:
    global _guard_fired
    previous = _guard_previous
    if callable(previous):  # the program's own handler decides (it may raise, or let the write go on)
        previous(signum, frame)
        return
    if _guard_fired:  # a second SIGTERM while the first one's cleanup runs: let the cleanup finish
        return
    _guard_fired = True
    raise Terminated(signum)


_sigint_seen = False
_sigint_previous: Any = None


def _on_sigint(signum, frame) -> None:
    """Python's Ctrl-C, remembered: raised inside a ``__del__`` or weakref callback, the KeyboardInterrupt is
    printed as "Exception ignored" and dropped, and the write would go on and commit; :meth:`AtomicOutput.commit`
    checks this instead."""
    global _sigint_seen
    _sigint_seen = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether Ctrl-C came while an output was open (also one whose KeyboardInterrupt was swallowed)."""
    return _sigint_seen


def guard_sigterm() -> bool:
    """Turn SIGTERM into :class:`Terminated` until :func:`release_sigterm` (nestable).

    Only in the main thread (Python runs signal handlers there only), and not
    where SIGTERM is ignored.  Returns whether this call counts (pass it to
    :func:`release_sigterm`).
    """
    global _guard_depth, _guard_previous, _guard_fired
    if threading.current_thread() is not threading.main_thread():
        return False
    with _guard_lock:
        if _guard_depth == 0:
            previous = signal.getsignal(signal.SIGTERM)
            if previous is signal.SIG_IGN:
                return False
            _guard_previous = previous if previous is not _on_sigterm else None
            _guard_fired = False
            signal.signal(signal.SIGTERM, _on_sigterm)
            _remember_sigint()
        _guard_depth += 1
    return True


def release_sigterm(counted: bool) -> None:
    """Undo one :func:`guard_sigterm`; the last one restores the previous handler (unless it was replaced since)."""
    global _guard_depth, _guard_previous
    if not counted:
        return
    with _guard_lock:
        _guard_depth -= 1
        if _guard_depth > 0:
            return
        previous, _guard_previous = _guard_previous, None
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        _forget_sigint()


def _remember_sigint() -> None:
    """Python's own Ctrl-C handler (only that one: a program's own handler decides) becomes :func:`_on_sigint`."""
    global _sigint_seen, _sigint_previous
    _sigint_seen, _sigint_previous = False, None
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        _sigint_previous = signal.default_int_handler
        signal.signal(signal.SIGINT, _on_sigint)


def _forget_sigint() -> None:
    global _sigint_previous, _sigint_seen
    if _sigint_previous is not None and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGINT) is _on_sigint:
        signal.signal(signal.SIGINT, _sigint_previous)
    _sigint_previous = None
    _sigint_seen = False


# --------------------------------------------------------------------------- #
# the atomic output                                                            #
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM held back (main thread) until the block ends, so cleanup is not cut short."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _remove(path: Path) -> None:
    """Delete a temporary file or store; a file is truncated first, so its space is freed even if still open."""
    with _signals_deferred():
        _remove_now(path)


def _remove_now(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            try:
                os.truncate(path, 0)  # an HDF5 handle that failed to close keeps the inode (and its blocks) alive
            except OSError:
                pass
            path.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - best effort: never hide the error being handled
        pass


def _is_a_directory(message: str) -> IsADirectoryError:
    err = IsADirectoryError(message)
    err.errno = errno.EISDIR
    return err


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """``fsync`` a directory (makes a rename in it durable); filesystems that refuse are ignored."""
    try:
        _fsync(path)
    except OSError:  # pragma: no cover - directories on some filesystems
        pass


def disk_full(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) is a full disk or quota (HDF5 only says so in its text)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "errno = 28," in text or "Disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(exc: BaseException, target: Path, what: str) -> OSError | None:
    """An ``OSError(ENOSPC)`` naming ``target`` if ``exc`` comes from a full disk, else None."""
    if not isinstance(exc, Exception) or not disk_full(exc):
        return None
    try:
        free = f"{shutil.disk_usage(target.parent).free / 1e6:.1f} MB free now"
    except OSError:  # pragma: no cover
        free = "free space unknown"
    return OSError(errno.ENOSPC, f"no space left on device while writing {target} ({free} on its file system); {what}")


class AtomicOutput:
    """A new file or directory (Zarr store) built under :func:`partial_path` and renamed onto ``target`` when complete.

    Parameters
    ----------
    target : str or PathLike
        Where the output appears.
    fsync : bool
        ``fsync`` a file before the rename (default True; a directory's files
        are not synced one by one, only the parent directory after the rename).

    Use as a context manager (commits when the block ends without error,
    discards otherwise), or call :meth:`commit` / :meth:`discard`.  From
    creation to commit/discard, SIGTERM raises :class:`Terminated` in the main
    thread (see :func:`guard_sigterm`).
    """

    def __init__(self, target: str | os.PathLike, *, fsync: bool = True):
        self.target = Path(target)
        self.temp = partial_path(self.target)
        self.fsync = fsync
        self._guard = guard_sigterm()
        self._open = True
        #: With ``commit(keep_replaced=True)``: the directory the output replaced, kept aside (also when the
        #: commit failed after the rename), else None.
        self.replaced: Path | None = None

    def commit(self, before_rename: Callable[[Path], None] | None = None, *,
               after_rename: Callable[[], None] | None = None, keep_replaced: bool = False) -> Path | None:
        """``fsync``, rename onto the target, ``fsync`` the directory.

        A store replacing a store goes through a rename aside (and back if the
        second rename fails).  ``after_rename`` is called once the output is in
        place (before the directory's ``fsync``).  With ``keep_replaced``, the
        directory it replaced is not removed but returned (under its hidden
        ``.NAME.*.old`` name), for a caller that commits a second output and
        must restore the first if that fails; otherwise None is returned.

        On any error the temporary is removed and the error raised (as
        ``OSError(ENOSPC)`` naming the target for a full disk).
        """
        if not self._open:
            return
        try:
            if _sigint_seen:  # a Ctrl-C something swallowed (a __del__, a weakref callback): not committed
                raise KeyboardInterrupt(f"interrupted: {self.target} was not written")
            if self.fsync and self.temp.is_file():
                _fsync(self.temp)
            if before_rename is not None:
                before_rename(self.temp)
            replaced = self._replace(keep_replaced)
            if after_rename is not None:
                after_rename()
            fsync_dir(self.target.parent)
        except BaseException as exc:
            self.discard()
            self.raise_for(exc)
            raise
        self._close()
        return replaced

    def _replace(self, keep_replaced: bool = False) -> Path | None:
        temp, out = self.temp, self.target
        if out.is_dir() and not out.is_symlink():  # rename(2) cannot replace a non-empty directory
            # Only a store replaces a store (callers check overwrite=): never delete a
            # directory of the user's for a file.
            if not temp.is_dir():
                raise _is_a_directory(f"cannot write {out}: it is a directory (a file was to replace it; "
                                      "nothing was changed)")
            aside = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
            with _signals_deferred():  # no Ctrl-C/SIGTERM between the two renames
                os.replace(out, aside)
                try:
                    os.replace(temp, out)
                except BaseException:
                    os.replace(aside, out)
                    raise
            if keep_replaced:
                self.replaced = aside
                return aside
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(temp, out)
        return None

    def discard(self) -> None:
        """Remove the temporary (idempotent); the target is untouched."""
        _remove(self.temp)
        self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            release_sigterm(self._guard)

    def raise_for(self, exc: BaseException) -> None:
        """Raise ``OSError(ENOSPC)`` naming the target from ``exc`` if it comes from a full disk (else return)."""
        existed = "was not changed" if self.target.exists() else "was not created"
        err = disk_full_error(exc, self.target, f"the partial output was removed and {self.target} {existed}")
        if err is not None:
            raise err from exc

    def __enter__(self) -> "AtomicOutput":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.commit()
            return
        self.discard()
        self.raise_for(exc)


# --------------------------------------------------------------------------- #
# undoing a failed append                                                      #
# --------------------------------------------------------------------------- #
def _walk(f, record: bool = False) -> tuple[dict[str, tuple], dict[str, dict], dict[str, tuple]]:
    """One pass over an open h5py file, links not followed.

    Returns ``(links, attrs, shapes)``: every link ``{path: (kind, ...)}``
    (hard links: ``(kind, object address)``); with ``record``, also every
    object's attributes (see :func:`_attrs`) and every dataset's shape.
    """
    links: dict[str, tuple] = {}
    attrs: dict[str, dict] = {"/": _attrs(f, f)} if record else {}
    shapes: dict[str, tuple] = {}
    seen: set = set()

    def visit(group, prefix: str) -> None:
        for name in group:
            path = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                links[path] = ("soft", link.path)
            elif isinstance(link, h5py.ExternalLink):
                links[path] = ("external", link.filename, link.path)
            else:
                obj = group[name]
                is_group = isinstance(obj, h5py.Group)
                links[path] = key = ("group" if is_group else "dataset", h5py.h5o.get_info(obj.id).addr)
                if record:
                    attrs[path] = _attrs(obj, f)
                    if not is_group:
                        shapes[path] = obj.shape
                if is_group and key not in seen:
                    seen.add(key)
                    visit(obj, path)

    visit(f, "")
    return links, attrs, shapes


def _norm(value: Any, f) -> Any:
    """A comparable form of an attribute value: object references by their target's name."""
    if isinstance(value, h5py.RegionReference):  # pragma: no cover - rare in NWB 2.x
        return ("region", f[value].name if value else None, str(f[value][value].tolist()) if value else None)
    if isinstance(value, h5py.Reference):
        return ("ref", f[value].name if value else None)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return ("array", value.shape, [_norm(v, f) for v in value.reshape(-1).tolist()])
        if value.dtype.names:
            return ("records", value.shape, [tuple(_norm(r[n], f) for n in value.dtype.names)
                                             for r in value.reshape(-1)])
        return ("numeric", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.void) and value.dtype.names:
        return tuple(_norm(value[n], f) for n in value.dtype.names)
    if isinstance(value, np.generic):
        return ("scalar", value.dtype.str, value.tobytes())
    return value


def _attrs(obj, f) -> dict[str, tuple]:
    """``{name: (value, dtype, shape, comparable value)}`` of an object's attributes, as h5py re-creates them."""
    found = {}
    attrs = obj.attrs
    for name in attrs:
        aid = attrs.get_id(name)
        value = attrs[name]
        found[name] = (value, aid.dtype, aid.shape, _norm(value, f))
    return found


def _same(a: tuple, b: tuple) -> bool:
    try:
        return a[1] == b[1] and a[2] == b[2] and bool(a[3] == b[3])
    except Exception:  # pragma: no cover - incomparable: treat as changed (restoring an unchanged value is harmless)
        return False


class AppendJournal:
    """What an append in place may change, recorded before it, to undo it after a failure.

    Records every link (name, kind, target), every attribute and every
    dataset's shape (one pass over the file: about 0.4 ms per object).
    :meth:`undo` deletes the links the append created, restores links,
    attributes and dataset extents it changed, and flushes.

    Limits: values an append overwrote *inside* an existing dataset's old
    extent are not restored (HDMF's appends create new objects, extend
    expandable datasets and rewrite attributes; they do not overwrite data);
    HDF5 does not give the space of deleted objects back, so the file stays
    larger (``nwb-dask repack`` or ``h5repack`` compacts it); an append killed
    by SIGKILL or a power loss cannot be undone and may leave the file
    unreadable (HDF5 updates its metadata in place): keep a copy of files that
    cannot be recreated.
    """

    def __init__(self, f):
        self.file = f
        self.links, self.attrs, self.shapes = _walk(f, record=True)

    def undo(self) -> list[str]:
        """Undo the append; returns what could not be restored (empty: the file reads as before)."""
        f, problems = self.file, []
        now = _walk(f)[0]
        # 1. objects and links the append created (the shallowest: deleting a group deletes its contents)
        created = [p for p in now if p not in self.links]
        for path in sorted(created, key=lambda p: p.count("/")):
            parent, name = path.rsplit("/", 1)
            parent = parent or "/"
            if parent in created and parent not in f:
                continue
            try:
                if name in f[parent]:
                    del f[parent][name]
            except Exception as exc:  # pragma: no cover - e.g. the disk is full
                problems.append(f"{path}: could not delete ({exc})")
        # 2. links that changed or disappeared
        for path, kind in self.links.items():
            cur = now.get(path)
            if cur == kind:
                continue
            parent, name = path.rsplit("/", 1)
            parent = parent or "/"
            if kind[0] in ("soft", "external") and parent in f:
                try:
                    if name in f[parent] or f[parent].get(name, getlink=True) is not None:
                        del f[parent][name]
                    f[parent][name] = h5py.SoftLink(kind[1]) if kind[0] == "soft" else h5py.ExternalLink(*kind[1:])
                except Exception as exc:  # pragma: no cover
                    problems.append(f"{path}: could not restore the link ({exc})")
            else:
                problems.append(f"{path}: the append replaced or deleted this {kind[0]}; it cannot be restored")
        # 3. extents of datasets the append extended, then attributes
        for path, shape in self.shapes.items():
            dset = f.get(path)
            if isinstance(dset, h5py.Dataset) and dset.shape != shape:
                try:
                    dset.resize(shape)
                except Exception as exc:  # pragma: no cover
                    problems.append(f"{path}: could not restore shape {shape} ({exc})")
        current_attrs = _walk(f, record=True)[1]
        for path, saved in self.attrs.items():
            current = current_attrs.get(path)
            if current is None or (path != "/" and now.get(path) != self.links[path]):
                continue  # gone or replaced: reported above
            obj = f[path]
            try:
                for name in current.keys() - saved.keys():
                    del obj.attrs[name]
                for name, value in saved.items():
                    if name not in current or not _same(current[name], value):
                        obj.attrs.create(name, value[0], shape=value[2], dtype=value[1])
            except Exception as exc:  # pragma: no cover
                problems.append(f"{path}: could not restore its attributes ({exc})")
        try:
            f.flush()
        except Exception as exc:  # pragma: no cover
            problems.append(f"flushing {f.filename}: {exc}")
        return problems

