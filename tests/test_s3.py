"""Signed (credentialed) S3 reads through fsspec/s3fs, against a local moto S3 server."""

from __future__ import annotations

import json
import pickle
import socket
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

import nwb_dask
import nwb_dask.testing
from nwb_dask.hdf5 import read as reader
from nwb_dask.sources import FsspecByteSource, HTTPByteSource, RemoteReadError, byte_source, freeze_options
from nwb_dask.sources.base import thaw

BUCKET = "nwb-dask-test"
KEY, SECRET = "testing", "testing"  # moto accepts any credentials until IAM auth is switched on


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free local port, with an HDF5 file and an NWB file in a bucket."""
    import boto3

    with pytest.MonkeyPatch.context() as mp:
        # fake credentials, and no lookups of real ones (files, instance metadata)
        for name, value in {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/nwb-dask-credentials",
            "AWS_CONFIG_FILE": "/nonexistent/nwb-dask-config",
        }.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)

        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1"
        )
        client.create_bucket(Bucket=BUCKET)

        folder = tmp_path_factory.mktemp("s3")
        x = (np.random.default_rng(3).normal(size=(20_011, 24)) * 40).astype("int16")
        with h5py.File(folder / "rec.h5", "w") as f:
            f.create_dataset("data", data=x, chunks=(1000, 24), **nwb_dask.codec("gzip").dataset_kwargs())
            f.create_dataset("check", data=x[:500], chunks=(100, 24), fletcher32=True)  # h5py fallback path
        nwb_path = folder / "session.nwb"
        data = nwb_dask.testing.synthetic_ephys(seconds=1, seed=2)
        nwb_dask.write_nwb(
            nwb_dask.testing.ephys_nwbfile(nwb_dask.DaskDataIO(data, codec="gzip")), nwb_path, progress=False
        )
        client.upload_file(str(folder / "rec.h5"), BUCKET, "rec.h5")
        client.upload_file(str(nwb_path), BUCKET, "session.nwb")
        client.upload_file(str(folder / "rec.h5"), BUCKET, "public/rec.h5", ExtraArgs={"ACL": "public-read"})
        try:
            yield SimpleNamespace(
                endpoint=endpoint,
                client=client,
                x=x,
                folder=folder,
                nwb_path=nwb_path,
                options={"storage_options": {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint}}},
            )
        finally:
            server.stop()


def _url(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


# --------------------------------------------------------------------------- #
# The reader over signed S3                                                    #
# --------------------------------------------------------------------------- #
def test_read_dataset_over_signed_s3(s3):
    arr = nwb_dask.read_dataset(_url("rec.h5"), "data", block_bytes=200_000, remote_options=s3.options)
    assert arr.numblocks[0] > 1
    # the reader's cached source is the fsspec one (nested storage_options made hashable for its cache)
    assert isinstance(reader._source(_url("rec.h5"), reader.options_key(s3.options)), FsspecByteSource)
    with h5py.File(s3.folder / "rec.h5", "r") as f:
        local = f["data"][()]
    got = arr.compute(scheduler="threads")
    assert got.dtype == local.dtype and got.shape == local.shape
    np.testing.assert_array_equal(got, local)
    # a filter nwb_dask cannot decode (fletcher32) falls back to h5py over the same source
    check = nwb_dask.read_dataset(_url("rec.h5"), "check", remote_options=s3.options)
    np.testing.assert_array_equal(check.compute(), s3.x[:500])


def test_window_read_over_signed_s3(s3):
    arr = nwb_dask.read_dataset(_url("rec.h5"), "data", remote_options=s3.options)  # one 64 MiB block
    np.testing.assert_array_equal(arr[5_123:5_311, 3:17].compute(), s3.x[5_123:5_311, 3:17])
    np.testing.assert_array_equal(arr[-7:].compute(), s3.x[-7:])


def test_read_nwb_over_signed_s3(s3):
    import dask.array as da

    nwbfile = nwb_dask.read_nwb(_url("session.nwb"), remote_options=s3.options)
    local = nwb_dask.read_nwb(s3.nwb_path)
    try:
        series, expected = nwbfile.acquisition["ElectricalSeries"], local.acquisition["ElectricalSeries"]
        assert isinstance(series.data, da.Array) and series.rate == expected.rate
        assert series.data.shape == expected.data.shape and series.data.dtype == expected.data.dtype
        np.testing.assert_array_equal(series.data.compute(), expected.data.compute())
        np.testing.assert_array_equal(series.data[12_000:12_500, 100:140].compute(), expected.data[12_000:12_500, 100:140].compute())
    finally:
        nwbfile.read_io.close()
        local.read_io.close()


def test_read_on_a_process_cluster(s3):
    from distributed import Client, LocalCluster

    arr = nwb_dask.read_dataset(_url("rec.h5"), "data", block_bytes=200_000, remote_options=s3.options)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        np.testing.assert_array_equal(client.compute(arr, sync=True), s3.x)
        np.testing.assert_array_equal(client.compute(arr[7_000:7_100], sync=True), s3.x[7_000:7_100])


def test_anon_false_uses_the_default_credentials(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)  # botocore's endpoint setting; keys from the env
    arr = nwb_dask.read_dataset(_url("rec.h5"), "data", remote_options={"anon": False})
    assert isinstance(reader._source(_url("rec.h5"), reader.options_key({"anon": False})), FsspecByteSource)
    np.testing.assert_array_equal(arr[:1_000].compute(), s3.x[:1_000])


# --------------------------------------------------------------------------- #
# Errors                                                                       #
# --------------------------------------------------------------------------- #
def test_missing_object_or_bucket(s3):
    for url in (_url("missing.h5"), "s3://no-such-bucket-nwb-dask/rec.h5"):
        with pytest.raises(FileNotFoundError, match=url):
            nwb_dask.read_dataset(url, "data", remote_options=s3.options)
        with pytest.raises(FileNotFoundError, match=url):
            byte_source(url, **s3.options).read(0, 10)


def test_range_past_the_end(s3):
    src = byte_source(_url("rec.h5"), **s3.options)
    size = (s3.folder / "rec.h5").stat().st_size
    with pytest.raises(RemoteReadError, match="past the end") as info:  # size unknown: a short reply
        src.read(size - 10, 100)
    assert info.value.url == _url("rec.h5") and info.value.byte_range == (size - 10, 100)
    assert src.size == size
    with pytest.raises(RemoteReadError, match=f"file size {size}"):  # size known: no request
        src.read_ranges([(0, 10), (size, 1)])


def test_wrong_endpoint(s3):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    with pytest.raises(RemoteReadError, match=f"s3://{BUCKET}/rec.h5") as info:
        byte_source(_url("rec.h5"), storage_options=options).read(0, 8)
    assert info.value.byte_range == (0, 8) and "connect" in str(info.value).lower()


def test_credentials_are_checked(s3, monkeypatch):
    """With moto's IAM authentication on, only a valid key and secret read the object."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = __import__("boto3").client(
        "iam", endpoint_url=s3.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    user = "nwb-dask-reader"
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # every request from now on is checked
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)

    def options(key_id: str | None, secret: str | None) -> dict:
        so: dict = {"client_kwargs": {"endpoint_url": s3.endpoint}}
        so.update({"key": key_id, "secret": secret} if key_id else {"anon": True})
        return {"storage_options": so}

    good = options(key["AccessKeyId"], key["SecretAccessKey"])
    arr = nwb_dask.read_dataset(_url("rec.h5"), "data", block_bytes=200_000, remote_options=good)
    np.testing.assert_array_equal(arr.compute(scheduler="threads"), s3.x)
    for bad, why in [
        (options(key["AccessKeyId"], "wrong-secret"), "signature"),
        (options("AKIAIOSFODNN7EXAMPLE", "x"), "access key id"),
        (options(None, None), "forbidden|denied"),  # anonymous
    ]:
        with pytest.raises(RemoteReadError, match=f"(?i)s3://{BUCKET}/rec.h5.*({why})"):
            byte_source(_url("rec.h5"), **bad).read(0, 8)
        with pytest.raises(OSError, match=f"s3://{BUCKET}/rec.h5"):  # through h5py's metadata read
            nwb_dask.read_dataset(_url("rec.h5"), "data", remote_options=bad)


# --------------------------------------------------------------------------- #
# The source itself                                                            #
# --------------------------------------------------------------------------- #
def test_source_ranges_and_map_ranges(s3):
    blob = (s3.folder / "rec.h5").read_bytes()
    src = FsspecByteSource(_url("rec.h5"), s3.options["storage_options"], max_gap=0, max_request=100_000, max_workers=3)
    ranges = [(0, 8), (1_000, 250_000), (5, 10), (700_000, 0), (len(blob) - 3, 3), (400_000, 1), (400_001, 2)]
    assert src.read_ranges(ranges) == [blob[o : o + n] for o, n in ranges]
    threads = set()

    def fn(i, data):
        import threading

        threads.add(threading.current_thread().name)
        return i, bytes(data[:3]), len(data)

    out = src.map_ranges(ranges, fn, spread=True)
    assert out == [(i, blob[o : o + min(n, 3)], n) for i, (o, n) in enumerate(ranges)]
    assert any(name.startswith("nwb_dask-fsspec") for name in threads)
    assert src.read_scattered(ranges) == [blob[o : o + n] for o, n in ranges]  # metadata prefetching's reads
    f = src.open(block_size=4096)
    f.seek(123_456)
    assert f.read(10_000) == blob[123_456:133_456]
    assert f.seek(0, 2) == len(blob) == src.size


def test_source_pickles_cheaply(s3):
    src = byte_source(_url("rec.h5"), **s3.options)
    assert isinstance(src, FsspecByteSource)
    first = src.read(0, 8)
    assert first == b"\x89HDF\r\n\x1a\n" and src._fs_obj is not None  # filesystem created
    data = pickle.dumps(src)
    assert len(data) < 1_000 and b"S3FileSystem" not in data
    clone = pickle.loads(data)
    assert clone._fs_obj is None and clone.storage_options == s3.options["storage_options"]
    assert clone.read(0, 8) == first
    assert SECRET not in repr(src) and repr(src) == f"FsspecByteSource('{_url('rec.h5')}')"


def test_http_with_storage_options_goes_through_fsspec(s3):
    url = f"{s3.endpoint}/{BUCKET}/public/rec.h5"
    src = byte_source(url, storage_options={})
    assert isinstance(src, FsspecByteSource)
    assert src.read(0, 8) == b"\x89HDF\r\n\x1a\n"
    assert isinstance(byte_source(url), HTTPByteSource)  # without: our own HTTP reader, as before
    np.testing.assert_array_equal(nwb_dask.read_dataset(url, "data")[:50].compute(), s3.x[:50])


# --------------------------------------------------------------------------- #
# Dispatch and options (no server)                                             #
# --------------------------------------------------------------------------- #
def test_byte_source_dispatch(monkeypatch):
    from fsspec.implementations.memory import MemoryFileSystem

    assert isinstance(byte_source("s3://bucket/key"), HTTPByteSource)  # public: anonymous HTTPS, as before
    assert isinstance(byte_source("s3://bucket/key", anon=True), HTTPByteSource)
    src = byte_source("s3://bucket/key", anon=False, max_workers=3)
    assert isinstance(src, FsspecByteSource) and src.storage_options == {"anon": False} and src.max_workers == 3
    src = byte_source("s3://bucket/key", storage_options={"key": "k", "secret": "s"})
    assert isinstance(src, FsspecByteSource) and src.storage_options == {"key": "k", "secret": "s"}
    with pytest.raises(TypeError, match="retries"):
        byte_source("s3://bucket/key", storage_options={}, retries=3)
    with pytest.raises(ValueError, match="anon=False"):
        byte_source("https://example.org/x.nwb", anon=False)
    with pytest.raises(ValueError, match="'ftp'.*http://.*s3://.*gs://.*storage_options"):
        byte_source("ftp://example.org/file.nwb")
    with pytest.raises(ValueError, match="'nosuchproto'.*fsspec"):
        byte_source("nosuchproto://x/y", storage_options={})

    # any protocol fsspec knows, with storage_options; a protocol registered at run time, without
    fs = MemoryFileSystem()
    fs.pipe("/nwb-dask-test/blob.bin", bytes(range(200)))
    src = byte_source("memory://nwb-dask-test/blob.bin", storage_options={})
    assert src.size == 200 and src.read_ranges([(10, 3), (0, 0), (198, 2)]) == [b"\n\x0b\x0c", b"", b"\xc6\xc7"]

    class _TestFS(MemoryFileSystem):
        protocol = "nwbdasktest"

    monkeypatch.setitem(_registry(), "nwbdasktest", _TestFS)  # as fsspec.register_implementation does
    assert isinstance(byte_source("nwbdasktest://nwb-dask-test/blob.bin"), FsspecByteSource)
    with pytest.raises(ValueError, match="'nwbdasktest2'"):
        byte_source("nwbdasktest2://nwb-dask-test/blob.bin")


def _registry() -> dict:
    """fsspec's registry of filesystem classes (``fsspec.registry`` is a read-only view of it)."""
    import importlib

    return importlib.import_module("fsspec.registry")._registry


def test_options_key_is_hashable_and_round_trips():
    options = {"storage_options": {"secret": "s", "key": "k", "client_kwargs": {"endpoint_url": "http://h"}, "l": [1, {"a": 2}]}, "max_workers": 4}
    key = reader.options_key(options)
    hash(key)
    same = reader.options_key({"max_workers": 4, "storage_options": dict(reversed(list(options["storage_options"].items())))})
    assert key == same and hash(key) == hash(same)
    assert {k: thaw(v) for k, v in key} == options
    assert pickle.loads(pickle.dumps(key)) == key
    assert freeze_options(None) == ()
    src = reader._source("s3://bucket/key", key)  # the reader's cache hands the frozen form to byte_source
    assert isinstance(src, FsspecByteSource) and src.storage_options == options["storage_options"]
