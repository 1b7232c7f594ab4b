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

import numpy as np

__all__ = ["synthetic_ephys", "ephys_block", "ephys_nwbfile"]

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
