"""Synthetic, deterministic, ephys-like recordings as lazy dask arrays.

Tests, benchmarks and ``nwb-dask demo`` need large realistic data without a
download.  :func:`synthetic_ephys` builds a Neuropixels-like int16 recording
(384 channels at 30 kHz by default) from three components:

* Gaussian noise (the bulk of the entropy, which sets the compression ratio);
* LFP: a few slow oscillations mixed smoothly across channels;
* spikes: units with a peak channel and a waveform spread over neighbours.

Every block is generated from ``(seed, first sample)`` only, so any block can be
recomputed independently and bit-identically: a writer can be verified by
regenerating the array and comparing element by element.
"""

from __future__ import annotations

import functools
import os

import numpy as np

__all__ = ["synthetic_ephys", "ephys_block", "ephys_nwbfile", "write_rich_nwbfile"]

#: Gaussian noise standard deviation in int16 units.  With LFP and spikes this
#: gives gzip-4+shuffle ratios near 2.4, like Neuropixels AP-band data.
NOISE_STD = 18.0
_N_LFP_SOURCES = 4
_N_UNITS = 64
_SPIKE_RATE_HZ = 8.0
_WAVEFORM_LEN = 60
_BANK_SAMPLES = 1 << 24


def _unit_table(seed: int, n_channels: int) -> dict[str, np.ndarray]:
    """Fixed per-recording properties: LFP sources and spike templates."""
    rng = np.random.default_rng([seed, 0xE9])
    ch = np.arange(n_channels)
    lfp_freq = rng.uniform(1.0, 40.0, _N_LFP_SOURCES)
    lfp_phase = rng.uniform(0, 2 * np.pi, _N_LFP_SOURCES)
    lfp_center = rng.uniform(0, n_channels, _N_LFP_SOURCES)
    lfp_amp = rng.uniform(40.0, 120.0, _N_LFP_SOURCES)
    # Smooth spatial mixing: each source fades with distance along the probe.
    lfp_mix = lfp_amp[:, None] * np.exp(-(((ch[None, :] - lfp_center[:, None]) / (n_channels / 3 + 1)) ** 2))

    peak = rng.integers(0, n_channels, _N_UNITS)
    amp = rng.uniform(60.0, 300.0, _N_UNITS)
    t = np.arange(_WAVEFORM_LEN) - 20
    shape = -np.exp(-((t / 4.0) ** 2)) + 0.35 * np.exp(-(((t - 12) / 8.0) ** 2))
    spread = np.exp(-(((ch[None, :] - peak[:, None]) / 3.0) ** 2))  # (unit, channel)
    spread[spread < 0.02] = 0.0
    templates = amp[:, None, None] * shape[None, :, None] * spread[:, None, :]  # (unit, t, ch)
    return {
        "lfp_freq": lfp_freq,
        "lfp_phase": lfp_phase,
        "lfp_mix": lfp_mix.astype(np.float32),
        "templates": np.rint(templates).astype(np.int16),
        "spike_channels": [np.flatnonzero(s) for s in spread],
    }


@functools.lru_cache(maxsize=4)
def _noise_bank(seed: int, std: float) -> np.ndarray:
    """Gaussian int16 noise reused by every block of a recording.

    Drawing fresh normals costs ~60 MB/s, which would make benchmarks measure
    the generator instead of the writer.  Blocks instead read windows of this
    32 MiB bank at pseudo-random offsets: far beyond deflate's 32 KiB window,
    so compressors see no artificial repetition.
    """
    rng = np.random.default_rng([seed, 0xBA4C])
    bank = np.empty(_BANK_SAMPLES, np.int16)
    step = 1 << 20  # in pieces, so building the bank needs little extra memory
    for pos in range(0, _BANK_SAMPLES, step):
        piece = rng.standard_normal(step, dtype=np.float32)
        piece *= std
        bank[pos : pos + step] = np.rint(piece, out=piece)
    return bank


def ephys_block(
    start: int,
    stop: int,
    n_channels: int = 384,
    rate: float = 30_000.0,
    seed: int = 0,
    _units: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Generate samples ``start:stop`` (all channels) of a synthetic recording.

    Parameters
    ----------
    start, stop : int
        Sample range along time.
    n_channels : int
        Number of channels.
    rate : float
        Sampling rate in Hz (sets LFP frequencies and spike counts).
    seed : int
        Recording seed; the same ``(seed, start, stop)`` always gives the same block.

    Returns
    -------
    numpy.ndarray
        ``(stop - start, n_channels)`` int16 array.
    """
    n = stop - start
    units = _units if _units is not None else _unit_table(seed, n_channels)
    rng = np.random.default_rng([seed, start, n_channels])
    # LFP at 1 kHz (it is band-limited far below that), held between samples.
    step = max(1, int(rate // 1000))
    first, last = start // step, (stop - 1) // step
    t = np.arange(first, last + 1) * step / rate
    sources = np.sin(2 * np.pi * units["lfp_freq"][None, :] * t[:, None] + units["lfp_phase"][None, :])
    lfp = np.rint(sources.astype(np.float32) @ units["lfp_mix"]).astype(np.int16)
    out = np.take(lfp, (start + np.arange(n)) // step - first, axis=0)
    # Noise: windows of the bank at random offsets.
    bank = _noise_bank(seed, NOISE_STD)
    flat = out.reshape(-1)
    for pos in range(0, flat.size, _BANK_SAMPLES // 2):
        size = min(_BANK_SAMPLES // 2, flat.size - pos)
        off = int(rng.integers(0, _BANK_SAMPLES - size + 1))
        flat[pos : pos + size] += bank[off : off + size]
    # Spikes: Poisson counts per unit for this block, waveforms added in place.
    templates = units["templates"]
    n_spikes = rng.poisson(_SPIKE_RATE_HZ * n / rate, len(templates))
    for unit in np.flatnonzero(n_spikes):
        nz = units["spike_channels"][unit]
        for s in rng.integers(0, max(n - _WAVEFORM_LEN, 1), n_spikes[unit]):
            seg = out[s : s + _WAVEFORM_LEN, nz]
            out[s : s + _WAVEFORM_LEN, nz] = seg + templates[unit, : len(seg)][:, nz]
    return out


def _block_from_info(block_info=None, *, n_channels, rate, seed, units):
    loc = block_info[None]["array-location"]
    (start, stop), (c0, c1) = loc
    block = ephys_block(start, stop, n_channels, rate, seed, units)
    return block[:, c0:c1]


def synthetic_ephys(
    seconds: float = 60.0,
    n_channels: int = 384,
    rate: float = 30_000.0,
    seed: int = 0,
    block_samples: int = 30_000,
):
    """A lazy synthetic ephys recording as a dask array.

    Parameters
    ----------
    seconds : float
        Duration; ``seconds * rate`` samples (about 23 MB per second at the defaults).
    n_channels : int
        Number of channels (384 like a Neuropixels 1.0 probe).
    rate : float
        Sampling rate in Hz.
    seed : int
        Seed; the array is a pure function of its parameters.
    block_samples : int
        Time samples per dask block (each block spans all channels).

    Returns
    -------
    dask.array.Array
        ``(round(seconds * rate), n_channels)`` int16, chunked in time.
    """
    import dask.array as da

    n = int(round(seconds * rate))
    if n <= 0 or n_channels <= 0:
        raise ValueError(f"synthetic_ephys needs a positive size, got {n} samples x {n_channels} channels")
    block_samples = max(1, min(int(block_samples), n))
    chunks_t = (block_samples,) * (n // block_samples) + ((n % block_samples,) if n % block_samples else ())
    units = _unit_table(seed, n_channels)
    return da.map_blocks(
        _block_from_info,
        chunks=(chunks_t, (n_channels,)),
        dtype=np.int16,
        meta=np.empty((0, 0), np.int16),
        name=f"synthetic-ephys-{seed}-{n}-{n_channels}-{rate}-{block_samples}",
        n_channels=n_channels,
        rate=rate,
        seed=seed,
        units=units,
    )


# The file-level metadata nwbinspector asks of every file (tests/test_inspector.py): who,
# where, what for.  Values say plainly that the recording is synthetic.
_SESSION_METADATA = dict(
    experimenter=["Doe, Jane"],
    lab="nwb_dask",
    institution="synthetic (nwb_dask.testing)",
    experiment_description="synthetic data for testing and benchmarking nwb_dask; no animal was recorded",
    keywords=["synthetic", "extracellular electrophysiology", "nwb_dask"],
)


def _subject():
    """The Subject of every synthetic file: NWB best practice (and DANDI) want one with these fields."""
    from pynwb.file import Subject

    return Subject(subject_id="synthetic-mouse-0", species="Mus musculus", sex="U", age="P90D",
                   description="no animal: the data are synthetic (nwb_dask.testing)")


def ephys_nwbfile(
    data,
    rate: float = 30_000.0,
    *,
    name: str = "ElectricalSeries",
    identifier: str = "nwb_dask-synthetic",
    session_start_time=None,
    **series_kwargs,
):
    """An in-memory NWBFile holding ``data`` as an ElectricalSeries.

    Builds the electrode table (one probe, one group, ``data.shape[1]``
    electrodes) that an ElectricalSeries needs, so tests, benchmarks and the
    demo write the same kind of file a real acquisition would.

    Parameters
    ----------
    data : array-like, DataChunkIterator or DataIO
        ``(time, channels)`` samples, as pynwb accepts them.
    rate : float
        Sampling rate in Hz.
    name : str
        Name of the ElectricalSeries in ``nwbfile.acquisition``.
    identifier : str
        NWB file identifier.
    session_start_time : datetime, optional
        Default 2026-01-01 00:00 UTC.
    **series_kwargs
        Other ``ElectricalSeries`` arguments (``starting_time``,
        ``conversion`` (default 0.195e-6), ``timestamps`` instead of ``rate``
        when ``rate=None``, ...).

    Returns
    -------
    pynwb.NWBFile
    """
    from datetime import datetime, timezone

    from pynwb import NWBFile
    from pynwb.ecephys import ElectricalSeries

    shape = getattr(data, "maxshape", None) or getattr(data, "shape", None)
    if shape is None:  # a DataIO wrapping an iterator
        shape = data.data.maxshape
    n_channels = int(shape[1])
    nwbfile = NWBFile(
        session_description="synthetic ephys-like recording (nwb_dask)",
        identifier=identifier,
        session_start_time=session_start_time or datetime(2026, 1, 1, tzinfo=timezone.utc),
        **_SESSION_METADATA,
        subject=_subject(),
    )
    device = nwbfile.create_device(name="probe", description="synthetic 384-channel probe")
    group = nwbfile.create_electrode_group("shank0", description="synthetic shank", location="CA1", device=device)
    for _ in range(n_channels):
        nwbfile.add_electrode(group=group, location="CA1")
    region = nwbfile.create_electrode_table_region(list(range(n_channels)), "all electrodes")
    kwargs = dict(conversion=0.195e-6, description="synthetic")
    if rate is not None:
        kwargs["rate"] = float(rate)
    kwargs.update(series_kwargs)
    series = ElectricalSeries(name=name, data=data, electrodes=region, **kwargs)
    nwbfile.add_acquisition(series)
    return nwbfile


def write_rich_nwbfile(
    path: str | os.PathLike,
    *,
    seconds: float = 2.0,
    n_channels: int = 32,
    seed: int = 0,
    compressed: bool = False,
    external_target: tuple[str | os.PathLike, str] | None = None,
) -> str | os.PathLike:
    """Write an NWB file holding many neurodata types, for tests and benchmarks.

    The file is written with plain ``pynwb.NWBHDF5IO`` (serially; nwb_dask's
    writer is not involved), so it is a neutral input for readers, repack,
    consolidate and the like.  Every value is a pure function of the
    arguments (object IDs aside, which pynwb draws at random).  The defaults
    write a 4.5 MB file in well under a second.

    Contents:

    * ``acquisition/ElectricalSeries``: ``seconds`` of :func:`synthetic_ephys`
      (int16, 30 kHz, ``n_channels``), ``conversion``/``offset`` set, over an
      electrodes table with extra columns ``impedance`` (float) and ``label``
      (string).  Up to 16 MiB the data is computed and written whole
      (contiguous when uncompressed); above, it goes through
      :class:`nwb_dask.DaskDataChunkIterator` so memory stays bounded;
    * ``processing/ecephys/LFP/LFP``: a 1 kHz float32 ElectricalSeries with
      float64 ``timestamps`` (no ``rate``), on every other electrode;
      ``processing/ecephys/LFP_power``: a TimeSeries whose ``timestamps`` are
      those of the LFP series (written as an HDF5 soft link);
    * ``units``: ragged ``spike_times`` and ``electrodes`` (a ragged
      DynamicTableRegion), ``waveform_mean``, a string column ``quality`` and
      ragged ``obs_intervals``;
    * ``intervals/trials``: start/stop times, a string column ``condition``, a
      ragged integer column ``stim_ids``, ragged ``tags`` and the
      ``timeseries`` column (a compound dataset of ``(idx_start, count,
      object reference)``) pointing at the ElectricalSeries;
    * ``acquisition/camera``: an ImageSeries of 64 uint8 64x64 frames (a
      drifting grating with noise);
      ``acquisition/reference_images``: an Images container with two
      GrayscaleImages and ``order_of_images`` (a dataset of object
      references); ``acquisition/shown_images``: an IndexSeries whose
      ``indexed_images`` is that container (an HDF5 link; pynwb refuses the
      deprecated ImageMaskSeries);
    * ``acquisition/annotations``: an AnnotationSeries (text data, timestamps;
      deprecated by pynwb 4, whose warning is silenced here);
    * ``processing/ophys/ImageSegmentation/PlaneSegmentation``: ROIs with a
      ``pixel_mask`` (a compound ``(x, y, weight)`` dataset) and a
      ``processing/ophys/Fluorescence/RoiResponseSeries`` whose ``rois`` is a
      DynamicTableRegion into it;
    * with ``external_target=(other_path, series_name)``:
      ``acquisition/external_<series_name>``, a TimeSeries whose ``data`` is
      an HDF5 external link to ``acquisition/<series_name>/data`` of the
      other file (same ``unit``/``conversion``/``offset`` as the target, whose
      rate and starting time it copies).

    Parameters
    ----------
    path : str or PathLike
        The file to create (overwritten if it exists).
    seconds : float
        Duration of the ephys recording (about ``60 kB * n_channels`` per
        second of int16 at 30 kHz); the LFP and units follow it.
    n_channels : int
        Number of electrodes (at least 2).
    seed : int
        Seed of every generated value.
    compressed : bool
        Store the ElectricalSeries, LFP and ImageSeries data with gzip level 4
        + shuffle, chunked (HDF5's filter pipeline); default uncompressed.
    external_target : (path, str), optional
        Another NWB file and the name of a TimeSeries in its ``acquisition``
        to link to.  The link is stored relative to ``path``'s directory.

    Returns
    -------
    str or PathLike
        ``path``.
    """
    import warnings
    from datetime import datetime, timezone

    import h5py
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.base import ImageReferences, Images
    from pynwb.ecephys import LFP, ElectricalSeries
    from pynwb.image import GrayscaleImage, ImageSeries, IndexSeries
    from pynwb.misc import AnnotationSeries, Units
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    from nwb_dask.nwb.iterators import DaskDataChunkIterator

    if n_channels < 2:
        raise ValueError(f"write_rich_nwbfile needs at least 2 channels, got {n_channels}")
    seconds = float(seconds)
    rate = 30_000.0
    rng = np.random.default_rng([seed, 0x41C4])
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def stored(data, chunks=None):
        if not compressed:
            return data
        kwargs = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        if chunks is not None:
            kwargs["chunks"] = chunks
        return H5DataIO(data, **kwargs)

    nwbfile = NWBFile(
        session_description="synthetic rich NWB file (nwb_dask.testing.write_rich_nwbfile)",
        identifier=f"nwb_dask-rich-{seed}",
        session_start_time=start,
        file_create_date=start,
        **_SESSION_METADATA,
        subject=_subject(),
    )

    # Ecephys: electrodes with custom columns, raw ElectricalSeries, LFP with timestamps.
    probe = nwbfile.create_device(name="probe", description="synthetic probe")
    shank = nwbfile.create_electrode_group("shank0", description="synthetic shank", location="CA1", device=probe)
    nwbfile.add_electrode_column("impedance", "impedance (ohm)")
    nwbfile.add_electrode_column("label", "electrode label")
    impedance = rng.uniform(1e5, 1e6, n_channels)
    for ch in range(n_channels):
        nwbfile.add_electrode(group=shank, location="CA1", x=0.0, y=float(20 * ch), z=0.0,
                              impedance=float(impedance[ch]), label=f"ch{ch:03d}")
    all_electrodes = nwbfile.create_electrode_table_region(list(range(n_channels)), "all electrodes")
    ephys = synthetic_ephys(seconds, n_channels, rate, seed=seed)
    n = ephys.shape[0]
    if ephys.nbytes <= 16 * 2**20:
        raw = ephys.compute(scheduler="threads")
        raw_data = stored(raw, (min(n, 16_384), n_channels))
    else:
        raw = None
        iterator = DaskDataChunkIterator(ephys)
        raw_data = stored(iterator, iterator.chunk_shape)
    nwbfile.add_acquisition(ElectricalSeries(
        name="ElectricalSeries", data=raw_data, electrodes=all_electrodes, rate=rate, starting_time=0.0,
        conversion=0.195e-6, offset=-1e-3, filtering="none", description="synthetic wide-band ephys"))

    lfp_channels = list(range(0, n_channels, 2))
    step = 30
    if raw is not None:
        lfp = raw[::step, lfp_channels]
    else:
        lfp = ephys[::step, lfp_channels].compute(scheduler="threads")
    lfp = lfp.astype(np.float32) * np.float32(0.195e-6)
    lfp_times = np.arange(lfp.shape[0]) * (step / rate) + rng.uniform(0, 1e-5, lfp.shape[0])
    ecephys = nwbfile.create_processing_module("ecephys", "extracellular electrophysiology")
    lfp_series = ElectricalSeries(
        name="LFP", data=stored(lfp, (min(len(lfp), 1024), len(lfp_channels))),
        electrodes=nwbfile.create_electrode_table_region(lfp_channels, "even electrodes"),
        timestamps=lfp_times, filtering="decimated, no filter", description="synthetic LFP")
    lfp_container = LFP()
    ecephys.add(lfp_container)  # parent first, so the region's table shares an ancestor
    lfp_container.add_electrical_series(lfp_series)
    ecephys.add(TimeSeries(name="LFP_power", data=(lfp.astype(np.float64) ** 2).mean(axis=1), unit="V^2",
                           timestamps=lfp_series, description="mean LFP power; timestamps linked to LFP"))

    # Units: ragged spike times and electrodes, waveforms, a string column, observation intervals
    # (with a gap that no spike falls in, as nwbinspector's check_spike_times_not_in_unobserved_interval asks).
    nwbfile.units = Units(name="units", description="synthetic sorted units", resolution=1 / rate,
                          waveform_rate=rate, waveform_unit="volts")
    nwbfile.add_unit_column("quality", "curation label")
    n_units = 8
    for u in range(n_units):
        count = int(rng.integers(5, 40))
        spikes = np.sort(rng.uniform(0, seconds, count))
        spikes = spikes[(spikes <= seconds / 2) | (spikes >= seconds / 2 + 0.1)]  # none in the unobserved gap
        peak = int(rng.integers(0, n_channels))
        electrodes = sorted({max(0, peak - 1), peak, min(n_channels - 1, peak + 1)})
        waveform = np.sin(np.linspace(0, 2 * np.pi, 60)) * rng.uniform(20, 80)
        nwbfile.add_unit(spike_times=spikes, electrodes=electrodes, waveform_mean=waveform,
                         obs_intervals=[[0.0, seconds / 2], [seconds / 2 + 0.1, seconds]],
                         quality="good" if u % 3 else "mua")

    # Trials: strings, a ragged column, tags and the compound timeseries column.
    nwbfile.add_trial_column("condition", "stimulus condition")
    nwbfile.add_trial_column("stim_ids", "stimuli shown", index=True)
    series = nwbfile.acquisition["ElectricalSeries"]
    n_trials = 6
    edges = np.linspace(0, seconds, n_trials + 1)
    for t in range(n_trials):
        shown = rng.integers(0, 100, int(rng.integers(1, 5))).tolist()
        nwbfile.add_trial(start_time=float(edges[t]), stop_time=float(edges[t + 1]) - 1e-3,
                          condition=["left", "right", "catch"][t % 3], stim_ids=shown,
                          tags=["odd" if t % 2 else "even"], timeseries=[series])

    # Images: an ImageSeries; an Images container with references; an IndexSeries linking to it.
    yy, xx = np.mgrid[0:64, 0:64]
    n_frames = 64  # time is the longest axis (nwbinspector's check_data_orientation)
    drift = np.arange(n_frames)[:, None, None] * 0.3
    frames = 100 + 64 * np.sin(xx / 6.0 + drift) * np.cos(yy / 9.0) + rng.integers(0, 16, (n_frames, 64, 64))
    frames = frames.clip(0, 255).astype(np.uint8)  # a drifting grating plus sensor noise
    camera = ImageSeries(name="camera", data=stored(frames, (10, 64, 64)), unit="n.a.", rate=30.0,
                         description="synthetic camera")
    nwbfile.add_acquisition(camera)
    image = GrayscaleImage(name="reference_frame", data=frames[0], description="first camera frame")
    mean_image = GrayscaleImage(name="mean_frame", data=frames.mean(axis=0).astype(np.uint8),
                                description="mean camera frame")
    images = Images(name="reference_images", images=[image, mean_image], description="reference frames",
                    order_of_images=ImageReferences(name="order_of_images", data=[mean_image, image]))
    nwbfile.add_acquisition(images)
    nwbfile.add_acquisition(IndexSeries(name="shown_images", data=rng.integers(0, 2, 20).astype(np.uint32),
                                        indexed_images=images, unit="N/A", rate=10.0,
                                        description="image shown per frame"))

    # Text: an AnnotationSeries.
    with warnings.catch_warnings():  # deprecated by pynwb 4 (EventsTable), still common in files read back
        warnings.filterwarnings("ignore", "AnnotationSeries is deprecated", UserWarning)
        nwbfile.add_acquisition(AnnotationSeries(
            name="annotations", data=[f"event {i}" for i in range(5)],
            timestamps=np.sort(rng.uniform(0, seconds, 5)), description="experimenter notes"))

    # Ophys: a compound pixel_mask and a DynamicTableRegion from a RoiResponseSeries.
    scope = nwbfile.create_device(name="microscope", description="synthetic two-photon microscope")
    plane = nwbfile.create_imaging_plane(
        name="plane0", optical_channel=OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0),
        description="synthetic plane", device=scope, excitation_lambda=920.0, imaging_rate=30.0,
        indicator="GCaMP6f", location="VISp")  # an Allen CCF term (nwbinspector)
    segmentation = ImageSegmentation()
    rois = segmentation.create_plane_segmentation(name="PlaneSegmentation", description="synthetic ROIs",
                                                imaging_plane=plane)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, 60, 2))
        rois.add_roi(pixel_mask=[(x0 + dx, y0 + dy, float(rng.uniform(0.1, 1.0))) for dx in range(3)
                                 for dy in range(2)])
    ophys = nwbfile.create_processing_module("ophys", "optical physiology")
    ophys.add(segmentation)
    fluorescence = Fluorescence()
    ophys.add(fluorescence)  # parent first, so the region's table shares an ancestor
    fluorescence.add_roi_response_series(RoiResponseSeries(
        name="RoiResponseSeries", data=rng.standard_normal((max(1, int(30 * seconds)), 4)).astype(np.float32),
        rois=rois.create_roi_table_region("all ROIs", region=[0, 1, 2, 3]), unit="lumens", rate=30.0,
        description="synthetic ROI fluorescence"))

    other = None
    try:
        if external_target is not None:
            other_path, name = external_target
            other = h5py.File(other_path, "r")
            group = other[f"acquisition/{name}"]
            target = group["data"]
            kwargs: dict = {}
            if "starting_time" in group:
                kwargs["rate"] = float(group["starting_time"].attrs["rate"])
                kwargs["starting_time"] = float(group["starting_time"][()])
            else:
                kwargs["timestamps"] = group["timestamps"][()]
            for attr in ("conversion", "offset", "resolution"):
                if attr in target.attrs:
                    kwargs[attr] = float(target.attrs[attr])
            unit = target.attrs.get("unit", "n.a.")
            nwbfile.add_acquisition(TimeSeries(
                name=f"external_{name}", data=target, unit=unit.decode() if isinstance(unit, bytes) else unit,
                description=f"acquisition/{name}/data of {os.path.basename(str(other_path))}", **kwargs))
        with NWBHDF5IO(str(path), "w") as io:
            io.write(nwbfile)
    finally:
        if other is not None:
            other.close()
    return path
