"""HDF5 without NWB knowledge: datasets as dask arrays (:mod:`.read`) and the direct-chunk-write sink (:mod:`.write`)."""
