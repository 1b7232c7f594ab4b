"""NWB on HDF5 through pynwb/hdmf: :class:`~nwb_dask.nwb.io.NWBDaskIO`, the ``data=`` wrappers, iterators, links, segments, lazy reads."""
