"""nwb_dask: a Dask-integrated, out-of-core, parallel-compressing I/O backend for NWB."""

from .codecs import Codec, CodecError, available_codecs, codec, codec_from_dataset

__all__ = ["Codec", "CodecError", "available_codecs", "codec", "codec_from_dataset"]
__version__ = "0.1.0"
