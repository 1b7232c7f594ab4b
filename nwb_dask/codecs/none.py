"""none: chunked storage without filters (the chunk's bytes as they are)."""

from __future__ import annotations

from nwb_dask.codecs.base import CodecFamily
from nwb_dask.codecs.registry import register_codec

__all__ = ["Raw"]


@register_codec
class Raw(CodecFamily):
    """``none`` (also ``None``, ``"raw"``, ``"uncompressed"``): no filter."""

    name = "none"
    aliases = ("raw", "uncompressed")
    zarr = True

    def stages(self, o):
        return ()

    def dataset_kwargs(self, o):
        return {}

    def from_cd_values(self, cd):
        return {}

    def to_numcodecs(self, o):
        return None
