"""Byte sources: byte ranges of files served over HTTP(S), S3, any fsspec filesystem, or local.

The lazy reader asks a byte source for the byte ranges of HDF5 chunks; the
source decides how to fetch them.  Every source implements the small
:class:`~nwb_dask.sources.base.ByteSource` protocol (``size``,
``read_ranges`` / ``map_ranges``, ``open`` for h5py's metadata reads,
``close``), one per module:

* :mod:`nwb_dask.sources.base`: the protocol, :class:`RemoteReadError`, the
  block-cached file behind ``open`` and the option freezing for caches;
* :mod:`nwb_dask.sources.ranges`: coalescing, spreading and balancing of
  ranges (pure functions);
* :mod:`nwb_dask.sources.http`, :mod:`nwb_dask.sources.fsspec`,
  :mod:`nwb_dask.sources.local`: the sources;
* :mod:`nwb_dask.sources.cache`: the on-disk metadata cache their ``open``
  preloads from (:class:`MetadataCache`);
* here: :func:`byte_source`, which picks one for a URL or path.

:class:`HTTPByteSource` coalesces ranges into parallel GET requests, retries
transient failures and raises :class:`RemoteReadError` naming the URL and byte
range; :class:`FsspecByteSource` does the same over an fsspec filesystem (s3fs
for signed S3 requests, gcsfs, adlfs, ...), with the filesystem's own retries.

Sources are picklable (they hold only the URL and settings) and open one
``requests.Session`` or fsspec filesystem per process, so dask tasks can
carry them to workers.

Which source :func:`byte_source` picks:

* ``http://``, ``https://``: :class:`HTTPByteSource`.
* ``s3://bucket/key`` without ``storage_options``: objects in *public*
  buckets, read anonymously over HTTPS (see :func:`s3_to_https`).
* ``s3://bucket/key`` with ``storage_options`` (or ``anon=False``, which uses
  s3fs's default credential chain: environment variables, ``~/.aws``,
  instance roles): signed requests through s3fs, e.g.::

      nwb_dask.read_nwb("s3://bucket/session.nwb", remote_options={"storage_options": {
          "key": "...", "secret": "...", "client_kwargs": {"endpoint_url": "https://minio:9000"}}})

* other fsspec protocols: with ``storage_options`` (may be ``{}``) any
  protocol fsspec knows (``http(s)://`` too, through fsspec's HTTP
  filesystem); without, the object stores in :data:`FSSPEC_SCHEMES` and
  protocols registered with ``fsspec.register_implementation(name, cls)``.
  Through :class:`FsspecByteSource`; the filesystem's package (s3fs, gcsfs,
  adlfs, ...) must be installed (``pip install nwb-dask[s3]`` for s3fs).
* ``file://`` URLs and local paths: :class:`LocalByteSource`.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from nwb_dask.sources.base import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CACHE_BLOCKS,
    ByteSource,
    RemoteReadError,
    freeze_options,
    thaw,
    url_scheme,
)
from nwb_dask.sources.cache import MetadataCache, metadata_cache
from nwb_dask.sources.fsspec import FSSPEC_SETTINGS, FsspecByteSource
from nwb_dask.sources.http import DEFAULT_TIMEOUT, REMOTE_SCHEMES, HTTPByteSource, s3_to_https
from nwb_dask.sources.local import LocalByteSource
from nwb_dask.sources.ranges import MIN_SPREAD_REQUEST

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CACHE_BLOCKS",
    "DEFAULT_TIMEOUT",
    "FSSPEC_SCHEMES",
    "MIN_SPREAD_REQUEST",
    "REMOTE_SCHEMES",
    "ByteSource",
    "FsspecByteSource",
    "HTTPByteSource",
    "LocalByteSource",
    "MetadataCache",
    "RemoteReadError",
    "byte_source",
    "freeze_options",
    "s3_to_https",
]

#: Object-store protocols :func:`byte_source` reads through fsspec even without ``storage_options``.
FSSPEC_SCHEMES = ("gs", "gcs", "az", "abfs", "adl")


def _fsspec_registered(scheme: str) -> bool:
    """Whether a filesystem class was registered for ``scheme`` at run time (not one fsspec ships)."""
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        return False
    return scheme in fsspec.registry and scheme not in known_implementations


def _unsupported(scheme: str, text: str) -> ValueError:
    return ValueError(
        f"unsupported URL scheme {scheme!r} in {text!r}; supported: "
        + ", ".join(f"{s}://" for s in (*REMOTE_SCHEMES, "file"))
        + " and local paths; the object stores "
        + ", ".join(f"{s}://" for s in FSSPEC_SCHEMES)
        + " through fsspec; and any other protocol fsspec knows when remote_options has "
        "'storage_options' (use {} for none)"
    )


def byte_source(
    url_or_path: str | os.PathLike, **options: Any
) -> HTTPByteSource | FsspecByteSource | LocalByteSource:
    """A byte source for a URL or a local path.

    Parameters
    ----------
    url_or_path : str or path-like
        ``http://``, ``https://`` or ``s3://bucket/key`` URL, another fsspec
        URL (``gs://``, ``az://``, ``abfs://``, ...), a ``file://`` URL or a
        local path.
    **options
        ``storage_options`` (dict): read the URL through fsspec
        (:class:`FsspecByteSource`) with these filesystem options, e.g. for
        signed S3 requests ``{"key": ..., "secret": ..., "client_kwargs":
        {"endpoint_url": ...}}``.  ``anon`` (bool): ``anon=False`` reads
        ``s3://`` (and other fsspec URLs) through fsspec with the default
        credentials; it is merged into ``storage_options``.  Without either,
        ``s3://`` URLs are read anonymously over HTTPS.

        The rest are the source's settings: for :class:`HTTPByteSource`
        ``retries``, ``backoff``, ``timeout``, ``max_gap``, ``max_request``,
        ``max_workers``, ...; for :class:`FsspecByteSource` ``max_gap``,
        ``max_request`` and ``max_workers`` (retries are the filesystem's,
        configured in ``storage_options``).  Local files take none.

        ``metadata_cache``: the on-disk metadata cache of remote sources
        (:func:`nwb_dask.sources.cache.metadata_cache`): absent or True the
        default one (off when ``$NWB_DASK_METADATA_CACHE`` is ``0``), False
        none, ``{"directory": ..., "max_bytes": ...}`` that one.

    Returns
    -------
    HTTPByteSource, FsspecByteSource or LocalByteSource
        See the module docstring for which URL gets which.

    Raises
    ------
    ValueError
        For a URL scheme that is not supported (named in the message, with
        what is), or ``anon=False`` for an ``http(s)://`` URL.
    TypeError
        For settings the chosen source does not take.
    """
    text = os.fspath(url_or_path)
    scheme = url_scheme(text)
    options = {k: thaw(v) for k, v in options.items()}
    storage_options = options.pop("storage_options", None)
    anon = options.pop("anon", None)
    cache_option = options.pop("metadata_cache", None)
    if scheme == "file":
        return LocalByteSource(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    if not scheme:
        return LocalByteSource(text)
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(f"storage_options must be a dict, got {type(storage_options).__name__}")
    if storage_options is None and anon is not False and scheme in REMOTE_SCHEMES:
        source = HTTPByteSource(text, **options)  # plain HTTP(S) and public S3 over HTTPS
        source.metadata_cache = metadata_cache(cache_option)
        return source
    if storage_options is None and anon is False and scheme in ("http", "https"):
        raise ValueError(
            f"anon=False does not apply to {text!r}: http(s) URLs are read as they are; give "
            "storage_options to read them through fsspec's HTTP filesystem"
        )
    if storage_options is None and anon is None and scheme not in FSSPEC_SCHEMES and not _fsspec_registered(scheme):
        raise _unsupported(scheme, text)
    unknown = set(options) - FSSPEC_SETTINGS
    if unknown:
        raise TypeError(
            f"FsspecByteSource (for {text!r}) takes no {', '.join(sorted(unknown))}; its settings are "
            f"{', '.join(sorted(FSSPEC_SETTINGS))}, and retries and timeouts are the filesystem's "
            "(set them in storage_options)"
        )
    storage_options = dict(storage_options or {})
    if anon is not None:
        storage_options.setdefault("anon", anon)
    source = FsspecByteSource(text, storage_options, **options)
    source.metadata_cache = metadata_cache(cache_option)
    return source
