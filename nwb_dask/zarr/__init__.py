"""NWB-Zarr: Zarr arrays as dask arrays (:mod:`.read`), the parallel Zarr sink (:mod:`.sink`), hdmf-zarr's IO with it (:mod:`.io`)."""
