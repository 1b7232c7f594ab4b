"""NWB TimeSeries as labelled, lazy ``xarray.DataArray`` objects (issue 18, item 3).

:func:`to_xarray` wraps a series' data, as :func:`nwb_dask.read_nwb` gave it
(a dask array), or as plain pynwb gave it (an h5py dataset, a numpy array), in
a ``DataArray`` backed by a dask array, without reading any samples:

* dims follow the NWB schema's own axis names for the series' type (axis 0 is
  always ``"time"``, ``num_channels`` is ``"channel"``, ImageSeries' ``x`` and
  ``y`` stay ``"x"`` and ``"y"``; see :func:`series_dims`);
* a ``"time"`` coordinate from ``timestamps`` or ``starting_time + arange(n) / rate``
  (the expression of pynwb's ``get_timestamps``, as a lazy dask arange), left
  without an index so that nothing is read (``arr.set_xindex("time")`` builds
  one, reading the coordinate, when ``.sel(time=...)`` is wanted);
* a ``"channel"`` coordinate (the electrodes table's row ids of the series'
  ``electrodes`` region) with one coordinate on ``"channel"`` per 1-D
  electrodes column; ragged, reference and multi-dimensional columns are
  skipped and named in ``attrs["skipped_electrode_columns"]``;
* ``scale=True``: pynwb's ``get_data_in_units`` expression
  (``data * conversion [* channel_conversion] + offset``), lazily.

xarray is an optional dependency (``pip install "nwb-dask[xarray]"``), imported
only when :func:`to_xarray` is called.
"""

from __future__ import annotations

import os
import re

import numpy as np

from nwb_dask.chunking import READ_MIN_BYTES, is_large_numeric
from nwb_dask.hdf5.read import dataset_array

__all__ = ["series_dims", "to_xarray"]

# NWB schema axis names -> xarray dim names (the schema's are written for people, not code)
_DIM_NAMES = {"num_channels": "channel", "num_ROIs": "roi", "num_samples": "sample", "num_features": "feature",
              "x,y": "xy", "x,y,z": "xyz"}


def _import_xarray():
    try:
        import xarray
    except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
        raise ImportError(
            'nwb_dask.to_xarray needs xarray, an optional dependency: pip install "nwb-dask[xarray]"'
        ) from exc
    return xarray


def _schema_dims(series) -> list[list[str]]:
    """The NWB schema's ``dims`` alternatives of the series type's ``data`` (nearest ancestor that declares them)."""
    import pynwb

    catalog = pynwb.get_type_map().namespace_catalog
    for cls in type(series).__mro__:
        ntype = getattr(cls, "neurodata_type", None) or getattr(cls, "data_type", None)
        namespace = getattr(cls, "namespace", None)
        if not ntype or not namespace:
            continue
        try:
            spec = catalog.get_spec(namespace, ntype)
        except (KeyError, ValueError):
            continue
        data = spec.get_dataset("data")
        if data is not None and data.dims:
            dims = data.dims
            return [list(d) for d in dims] if isinstance(dims[0], (list, tuple)) else [list(dims)]
    return []


def series_dims(series, ndim: int) -> tuple[str, ...]:
    """xarray dim names for an ``ndim``-D ``data`` of ``series``, from the NWB schema of its type.

    Axis 0 is ``"time"``; the schema's ``num_channels`` is ``"channel"``,
    ``num_ROIs`` ``"roi"``, ``num_samples`` ``"sample"``, other ``num_X`` are
    ``X`` and ``num_DIMk`` is ``dim_{k-1}``; axes the schema does not name
    (an extension type, an unexpected shape) are ``dim_1``, ``dim_2``, ...

    >>> from pynwb.image import ImageSeries
    >>> series_dims(ImageSeries(name="c", data=np.zeros((2, 3, 4)), unit="n/a", rate=1.0), 3)
    ('time', 'x', 'y')
    """
    if ndim == 0:
        raise ValueError(f"{type(series).__name__} {series.name!r}: data is a scalar, not a series")
    named = next((d for d in _schema_dims(series) if len(d) == ndim), None)
    dims = ["time"]
    for axis in range(1, ndim):
        raw = named[axis] if named else f"num_DIM{axis + 1}"
        name = _DIM_NAMES.get(raw)
        if name is None:
            m = re.fullmatch(r"num_DIM(\d+)", raw)
            name = f"dim_{int(m.group(1)) - 1}" if m else re.sub(r"\W+", "_", raw.removeprefix("num_")).strip("_")
        dims.append(name or f"dim_{axis}")
    for axis, name in enumerate(dims):  # a schema reusing a name on two axes
        if dims.count(name) > 1:
            dims[axis] = f"{name}_{axis}"
    return tuple(dims)


def _lazy(value, what: str):
    """``value`` (a field of a series) as a dask array, without reading its elements where they are on disk.

    A dask array is returned as it is (what :func:`nwb_dask.read_nwb` made);
    an h5py dataset of a local file becomes nwb_dask's own reader (a
    picklable graph, so it computes on a distributed cluster); a zarr array
    (NWB-Zarr) is wrapped by ``dask.array.from_array`` (zarr arrays pickle);
    in-memory values (numpy, lists) are wrapped as they are.
    """
    import dask.array as da
    import h5py

    if isinstance(value, da.Array):
        return value
    from hdmf.data_utils import DataIO

    from nwb_dask.nwb.iterators import DaskDataChunkIterator

    if isinstance(value, DaskDataChunkIterator):  # DaskDataIO's stream: the dask array it was given
        return value.source
    if isinstance(value, DataIO):
        return _lazy(value.data, what)  # a data= wrapper (DaskDataIO, H5DataIO) of a series not yet written
    if isinstance(value, h5py.Dataset):
        if value.size == 0 or value.ndim == 0 or value.dtype.kind not in "biufc":  # empty, text (read as str)
            return da.from_array(np.asarray(value[()]), chunks=-1)
        if os.path.isfile(value.file.filename):
            return dataset_array(value)
        if is_large_numeric(value.shape, value.dtype, READ_MIN_BYTES):
            raise ValueError(
                f"{what}: an h5py dataset of {value.nbytes} bytes in a file opened from a file object "
                f"({value.file.filename!r}); open the file with nwb_dask.read_nwb(url) so that it is read lazily"
            )
        return da.from_array(value[()], chunks=-1)  # small, and only reachable through this open file object
    try:
        import zarr

        if isinstance(value, zarr.Array):
            return da.from_array(value, chunks=value.chunks)
    except ImportError:  # zarr is the [zarr] extra: without it no value is a zarr array
        pass
    if hasattr(value, "__next__") or type(value).__name__.endswith("DataChunkIterator"):
        raise TypeError(f"{what}: {type(value).__name__} is an iterator; to_xarray needs an array (write it first)")
    arr = np.asarray(value)
    return da.from_array(arr, chunks="auto" if arr.size else -1)


def _time_coordinate(series, n: int, chunks):
    """The ``time`` values: ``timestamps`` as stored, or pynwb's ``arange(n) / rate + starting_time``, lazily."""
    import dask.array as da

    what = f"{type(series).__name__} {series.name!r}"
    stored = series.fields.get("timestamps")
    if stored is not None:
        timestamps = _lazy(series.timestamps, f"{what}: timestamps")  # a linked series' timestamps resolved by pynwb
        if timestamps.ndim != 1 or timestamps.shape[0] != n:
            raise ValueError(f"{what}: {timestamps.shape[0] if timestamps.ndim else 0} timestamps "
                             f"for {n} samples of data")
        return timestamps, {"units": "seconds", "source": "timestamps"}
    rate = series.fields.get("rate")
    if rate is None:
        return None, {}
    starting_time = series.fields.get("starting_time", 0.0)
    starting_time = 0.0 if starting_time is None else starting_time
    # pynwb's get_timestamps: np.arange(n) / rate + starting_time, the same operations, so the same floats
    samples = da.arange(n, chunks=chunks if n else ((0,),))
    return samples / rate + starting_time, {"units": "seconds", "source": "starting_time + arange(n) / rate",
                                           "rate": float(rate), "starting_time": float(starting_time)}


def _column_values(column) -> np.ndarray | None:
    """A 1-D electrodes column's values (strings as ``str``), or None for one that is not 1-D per row."""
    values = np.asarray(column.data[:])
    if values.ndim != 1:
        return None
    if values.dtype == object:
        if not all(isinstance(v, (str, bytes)) for v in values):
            return None  # references (group), nested data
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=str)
    if values.dtype.kind == "S":
        return values.astype(str)
    return values


def _channel_coordinates(series, n_channels: int) -> tuple[dict, list[str]]:
    """``channel`` (electrode ids) and one coordinate per 1-D electrodes column, and the skipped columns."""
    from hdmf.common import DynamicTableRegion, VectorIndex

    region = series.fields["electrodes"]
    what = f"{type(series).__name__} {series.name!r}"
    rows = np.asarray(region.data[:], dtype=np.int64)
    if rows.shape != (n_channels,):
        raise ValueError(f"{what}: its electrodes region has {rows.size} rows for {n_channels} channels of data")
    table = region.table
    coords = {"channel": ("channel", np.asarray(table.id.data[:])[rows])}
    skipped = []
    indexed = {c.target.name for c in table.columns if isinstance(c, VectorIndex)}
    for column in table.columns:
        name = column.name
        if isinstance(column, VectorIndex):
            continue  # its target is the ragged column, skipped below
        values = None
        if name not in indexed and not isinstance(column, DynamicTableRegion) and name not in ("time", "channel"):
            values = _column_values(column)
        if values is None:
            skipped.append(name)
            continue
        coords[name] = ("channel", values[rows])
    if "group_name" not in coords and "group" in skipped:  # older files: no group_name column
        coords["group_name"] = ("channel", np.array([g.name for g in table["group"].data[:]], dtype=str)[rows])
    return coords, skipped


def to_xarray(series, *, scale: bool = False, time: bool = True):
    """A TimeSeries (ElectricalSeries, ImageSeries, ...) as a labelled, lazy ``xarray.DataArray``.

    The DataArray is backed by the series' own dask array (the one
    :func:`nwb_dask.read_nwb` put there; h5py or numpy data of a plain pynwb
    series is wrapped lazily), so nothing is read until it is computed, on
    any dask scheduler, including a distributed cluster and files read over
    HTTP(S).

    Parameters
    ----------
    series : pynwb.TimeSeries
        Any TimeSeries; an ElectricalSeries (or any series with an
        ``electrodes`` region) also gets channel coordinates.
    scale : bool
        Apply pynwb's ``get_data_in_units``: ``data * conversion + offset``
        (times ``channel_conversion`` along ``"channel"`` where the series
        has it), lazily.  The dtype is the one NumPy gives pynwb's
        expression, so it matches ``get_data_in_units()``: float64 for a
        series read from a file (pynwb reads ``conversion`` as a float64
        scalar); for an in-memory series whose ``conversion`` is a Python
        float, NumPy 2's promotion keeps float32 data, or integer data
        times a float32 ``channel_conversion``, float32.
        ``attrs["units"]`` is then the series' ``unit``.
    time : bool
        Add the ``"time"`` coordinate (seconds), from ``timestamps``, or
        ``starting_time + arange(n) / rate`` as a lazy dask arange (pynwb's
        ``get_timestamps`` expression).  It has no index, so nothing is
        read; ``arr.set_xindex("time")`` builds one for ``.sel(time=...)``.

    Returns
    -------
    xarray.DataArray
        dims: ``("time",)`` for 1-D data, ``("time", "channel")`` for an
        ElectricalSeries, the NWB schema's axis names otherwise (see
        :func:`series_dims`).  ``attrs``: ``name``, ``neurodata_type``,
        ``description``, ``unit``, ``conversion``, ``offset``,
        ``resolution``, ``scaled`` (and ``units`` when scaled,
        ``skipped_electrode_columns`` for an ElectricalSeries).

    Raises
    ------
    ImportError
        xarray is not installed (``pip install "nwb-dask[xarray]"``).
    ValueError
        timestamps or electrodes that do not match the data's shape, naming
        the series.
    """
    xr = _import_xarray()
    what = f"{type(series).__name__} {series.name!r}"
    data = _lazy(series.data, f"{what}: data")
    dims = series_dims(series, data.ndim)

    channel_axis = dims.index("channel") if "channel" in dims else None
    coords, skipped = {}, None
    if channel_axis is not None and series.fields.get("electrodes") is not None:
        coords, skipped = _channel_coordinates(series, data.shape[channel_axis])

    conversion = series.fields.get("conversion", 1.0)
    offset = series.fields.get("offset", 0.0)
    unit = series.fields.get("unit")
    if scale:
        factor = conversion
        channel_conversion = series.fields.get("channel_conversion")
        if channel_conversion is not None:
            channel_conversion = _lazy(channel_conversion, f"{what}: channel_conversion")  # read_nwb may make it dask
            if channel_axis is None or channel_conversion.shape != (data.shape[channel_axis],):
                raise ValueError(f"{what}: channel_conversion of shape {channel_conversion.shape} "
                                 f"does not match the data's channels ({data.shape})")
            # pynwb's expression (conversion * channel_conversion), broadcast along the channel axis
            factor = (conversion * channel_conversion).reshape((-1,) + (1,) * (data.ndim - channel_axis - 1))
        data = data * factor + offset

    attrs = {
        "name": series.name,
        "neurodata_type": type(series).__name__,
        "description": series.fields.get("description", ""),
        "unit": unit,
        "conversion": float(conversion),
        "offset": float(offset),
        "resolution": float(series.fields.get("resolution", -1.0)),
        "scaled": bool(scale),
    }
    if scale:
        attrs["units"] = unit
    if skipped is not None:
        attrs["skipped_electrode_columns"] = skipped
    attrs = {k: v for k, v in attrs.items() if v is not None}

    arr = xr.DataArray(data, dims=dims, coords=coords, attrs=attrs, name=series.name)
    if time:
        values, time_attrs = _time_coordinate(series, data.shape[0], data.chunks[0])
        if values is not None:
            # no index: a pandas index would read every timestamp now
            arr = arr.assign_coords(xr.Coordinates({"time": ("time", values, time_attrs)}, indexes={}))
    return arr
