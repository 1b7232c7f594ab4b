"""``NWBDaskIO`` is a drop-in for ``pynwb.NWBHDF5IO`` (issue 15.1).

Two halves:

* pynwb's own round-trip mixins (``pynwb.testing``: ``NWBH5IOFlexMixin``,
  ``NWBH5IOMixin``, ``AcquisitionH5IOMixin``) and hdmf's (``H5RoundTripMixin``)
  over every container family (base, device, ecephys, icephys with its metadata
  tables, behavior, images, ogen, ophys, retinotopy, misc, file-level metadata,
  links, references), each class generated twice: once with ``NWBHDF5IO`` and
  once with ``NWBDaskIO`` in its place (the mixins' module-level ``NWBHDF5IO``
  is patched, so their ``write``/``read``/``export_io`` go through the class
  under test).  Both must pass the mixins' checks (same objects and object IDs
  back, valid files, exports); on top, every container written and read names
  the written path as ``container_source``, no temporary is left, and the
  warnings of the ``NWBDaskIO`` run are the ``NWBHDF5IO`` run's.
* side-by-side scripts (second write of the same NWBFile, ``file=``, drivers,
  managers, ``herd_path``, ``read_nwb``, external links, appends, exports,
  misuse) run once with each class; their outcomes (values, container_source,
  object IDs, links, warnings, error types and messages) must be equal.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from unittest import mock

import numpy as np
import pytest
from hdmf.common import DynamicTable, VectorData
from hdmf.testing import H5RoundTripMixin
from pynwb import NWBHDF5IO, NWBFile, TimeSeries, behavior, ecephys, get_class, image, misc
from pynwb import validate as pynwb_validate
from pynwb.testing import AcquisitionH5IOMixin, NWBH5IOFlexMixin, NWBH5IOMixin, TestCase
from pynwb.testing import testh5io
from pynwb.testing.mock import base as mbase, behavior as mbehavior, device as mdevice, ecephys as mecephys
from pynwb.testing.mock import file as mfile, icephys as micephys, ogen as mogen, ophys as mophys

from nwb_dask import NWBDaskIO

IO_CLASSES = (NWBHDF5IO, NWBDaskIO)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """The mixins write ``test_X.nwb`` in the working directory."""
    monkeypatch.chdir(tmp_path)


def _warnings(caught, root: str) -> list[tuple[str, str]]:
    """Warnings as (category, message) with the directory of the files written replaced, in a stable order."""
    # A ResourceWarning about an IO of another test (collected by the garbage collector during this one) is
    # not this test's behaviour: only those naming this test's files count.
    return sorted((w.category.__name__, str(w.message).replace(root, "<dir>")) for w in caught
                  if not (issubclass(w.category, ResourceWarning) and root not in str(w.message)))


def _leftovers() -> list[str]:
    return [n for n in os.listdir(".") if ".partial" in n]


# --------------------------------------------------------------------------- #
# pynwb's mixins with the IO class swapped                                     #
# --------------------------------------------------------------------------- #
#: Warnings of each NWBHDF5IO run: {(case, test method, phase): [(category, message)]}.
_REFERENCE: dict[tuple, list] = {}


class _WithIO:
    """Runs a pynwb round-trip mixin with ``io_class`` wherever the mixin uses ``NWBHDF5IO``."""

    io_class = NWBHDF5IO
    case = ""

    def setUp(self):
        patcher = mock.patch.object(testh5io, "NWBHDF5IO", self.io_class)
        patcher.start()
        self.addCleanup(patcher.stop)
        super().setUp()

    def _written_root(self):
        root = getattr(self, "nwbfile", None)  # NWBH5IOFlexMixin
        if root is None:  # NWBH5IOMixin: the container's NWBFile
            root = self.container
            while root.parent is not None:
                root = root.parent
        return root

    def _same_warnings(self, phase: str, caught) -> None:
        got = _warnings(caught, os.getcwd())
        key = (self.case, self._testMethodName, phase)
        if self.io_class is NWBHDF5IO:
            _REFERENCE[key] = got
            return
        if key not in _REFERENCE:  # the NWBHDF5IO twin did not run first (-k, random order): run it now
            twin = globals()[type(self).__name__.replace(self.io_class.__name__, "NWBHDF5IO")](self._testMethodName)
            here = os.getcwd()
            os.makedirs("twin")
            os.chdir("twin")
            try:
                twin.setUp()
                try:
                    getattr(twin, self._testMethodName)()
                finally:
                    twin.tearDown()
                    twin.doCleanups()
            finally:
                os.chdir(here)
        assert got == _REFERENCE[key], f"{self.io_class.__name__} warned differently from NWBHDF5IO"

    def validate(self):
        """The mixins' validation of the written files, against pynwb's namespaces.

        The files cache exactly those (written by this pynwb, no extensions);
        reading them back from every file, as ``validate(path=...)`` does by
        default, costs ~1 s a file here (test_cached_spec_is_the_same checks
        the cached specifications instead, and the side-by-side tests
        validate with them).
        """
        for path in (self.filename, self.export_filename):
            if os.path.exists(path):
                errors = pynwb_validate(path=path, use_cached_namespaces=False)
                assert not errors, errors

    def roundtripContainer(self, cache_spec=True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read = super().roundtripContainer(cache_spec=cache_spec)
        path = os.path.abspath(self.filename)
        written = self._written_root()
        assert type(self.reader) is self.io_class
        # every container written and read names the file written: no temporary name leaks into them
        assert {c.container_source for c in written.objects.values()} == {path}
        assert {c.container_source for c in self.read_nwbfile.objects.values()} == {path}
        assert read.container_source == path
        assert _leftovers() == []
        self._same_warnings("write+read", caught)
        return read

    def roundtripExportContainer(self, cache_spec=True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read = super().roundtripExportContainer(cache_spec=cache_spec)
        path = os.path.abspath(self.export_filename)
        assert type(self.export_reader) is self.io_class
        assert {c.container_source for c in self.read_exported_nwbfile.objects.values()} == {path}
        assert _leftovers() == []
        self._same_warnings("export", caught)
        return read


def _twice(case: str, *bases) -> None:
    """``Test<case>_NWBHDF5IO`` and ``Test<case>_NWBDaskIO``: the mixin test class with each IO class."""
    for io_class in IO_CLASSES:
        name = f"Test{case}_{io_class.__name__}"
        globals()[name] = type(name, (_WithIO, *bases, TestCase), {"io_class": io_class, "case": case})


def _flex(case: str, add) -> None:
    """A ``NWBH5IOFlexMixin`` round trip of the container ``add(nwbfile)`` adds (and returns)."""

    class Case(NWBH5IOFlexMixin):
        def getContainerType(self):
            return case

        def addContainer(self):
            self.added = add(self.nwbfile)
            if isinstance(self.added, NWBFile):  # a whole file (icephys metadata tables)
                self.nwbfile = self.added

        def getContainer(self, nwbfile):
            return nwbfile if self.added is self.nwbfile else nwbfile.objects[self.added.object_id]

    _twice(case, Case)


# ---- base ----------------------------------------------------------------------
Images = get_class("Images", "core")
GrayscaleImage, RGBImage = get_class("GrayscaleImage", "core"), get_class("RGBImage", "core")
ImageReferences = get_class("ImageReferences", "core")


def _images(nwbfile):
    gray = GrayscaleImage(name="gray", data=np.arange(12, dtype="uint8").reshape(3, 4), description="g")
    rgb = RGBImage(name="rgb", data=np.ones((3, 4, 3), dtype="uint8"), description="c")
    images = Images(name="images", images=[gray, rgb], description="two images",
                    order_of_images=ImageReferences(name="order_of_images", data=[rgb, gray]))  # references
    nwbfile.add_acquisition(images)
    return images


def _processing(nwbfile):
    module = nwbfile.create_processing_module(name="behavior", description="processed")
    module.add(mbase.mock_TimeSeries(name="speed"))
    return module


_flex("TimeSeries", lambda f: mbase.mock_TimeSeries(nwbfile=f))
_flex("TimeSeriesTimestamps", lambda f: mbase.mock_TimeSeries(timestamps=[0.0, 0.5, 1.5, 4.0], nwbfile=f))
_flex("TimeSeriesStrings", lambda f: mbase.mock_TimeSeries(data=np.array(["a", "bb", "ccc"]), unit="n/a",
                                                             nwbfile=f))
_flex("ProcessingModule", _processing)
_flex("Images", _images)
_flex("Scratch", lambda f: f.add_scratch(np.arange(6.0).reshape(2, 3), name="notes", description="scratch"))


class _TimeSeriesMixin(AcquisitionH5IOMixin):  # pynwb's other mixin: the container made in setUpContainer
    def setUpContainer(self):
        return TimeSeries(name="ts", data=np.arange(10, dtype="int16"), unit="mV", rate=2.0, starting_time=1.5)


_twice("AcquisitionTimeSeries", _TimeSeriesMixin)

# ---- device ----------------------------------------------------------------------


class _DeviceMixin(NWBH5IOMixin):
    def setUpContainer(self):
        return mdevice.mock_Device(name="amp", description="amplifier", manufacturer="maker")

    def addContainer(self, nwbfile):
        nwbfile.add_device(self.container)

    def getContainer(self, nwbfile):
        return nwbfile.get_device(self.container.name)


_twice("Device", _DeviceMixin)

# ---- ecephys ---------------------------------------------------------------------


def _electrodes_table(nwbfile):
    mecephys.mock_ElectrodesTable(n_rows=4, nwbfile=nwbfile)
    return nwbfile.electrodes


def _lfp(nwbfile):
    series = mecephys.mock_ElectricalSeries(name="lfp_series", electrodes=mecephys.mock_electrodes(nwbfile=nwbfile))
    lfp = ecephys.LFP(electrical_series=series)
    nwbfile.create_processing_module(name="ecephys", description="lfp").add(lfp)
    return lfp


def _filtered(nwbfile):
    series = mecephys.mock_ElectricalSeries(name="filtered", electrodes=mecephys.mock_electrodes(nwbfile=nwbfile))
    filtered = ecephys.FilteredEphys(electrical_series=series)
    nwbfile.create_processing_module(name="ecephys", description="filtered").add(filtered)
    return filtered


def _features(nwbfile):
    features = ecephys.FeatureExtraction(
        electrodes=mecephys.mock_electrodes(n_electrodes=3, nwbfile=nwbfile), description=["pc1", "pc2"],
        times=[0.1, 0.2], features=np.arange(12.0).reshape(2, 3, 2))
    nwbfile.create_processing_module(name="ecephys", description="features").add(features)
    return features


def _event_detection(nwbfile):
    series = mecephys.mock_ElectricalSeries(nwbfile=nwbfile)
    detection = ecephys.EventDetection(detection_method="threshold", source_electricalseries=series,  # a link
                                       source_idx=[1, 3], times=[0.1, 0.3])
    nwbfile.create_processing_module(name="ecephys", description="events").add(detection)
    return detection


_flex("ElectrodeGroup", lambda f: mecephys.mock_ElectrodeGroup(nwbfile=f))
_flex("ElectrodesTable", _electrodes_table)
_flex("ElectricalSeries", lambda f: mecephys.mock_ElectricalSeries(nwbfile=f))  # a DynamicTableRegion reference
_flex("SpikeEventSeries", lambda f: mecephys.mock_SpikeEventSeries(nwbfile=f))
_flex("LFP", _lfp)
_flex("FilteredEphys", _filtered)
_flex("FeatureExtraction", _features)
_flex("EventDetection", _event_detection)

# ---- icephys, with its metadata tables -----------------------------------------


def _icephys_tables(nwbfile):
    """The whole hierarchy of icephys metadata tables (a small version of create_icephys_testfile).

    Intracellular recordings < simultaneous < sequential < repetitions <
    experimental conditions, each with a custom column; a recording without
    stimulus; TimeSeriesReferenceVectorData and DynamicTableRegion references.
    """
    electrode = micephys.mock_IntracellularElectrode(nwbfile=nwbfile)
    rows = []
    for sweep in range(3):
        stimulus = (None if sweep == 2 else micephys.mock_CurrentClampStimulusSeries(
            name=f"stimulus{sweep}", electrode=electrode, sweep_number=sweep, nwbfile=nwbfile))
        response = micephys.mock_CurrentClampSeries(name=f"response{sweep}", electrode=electrode,
                                                    sweep_number=sweep, nwbfile=nwbfile)
        rows.append(nwbfile.add_intracellular_recording(electrode=electrode, stimulus=stimulus, response=response,
                                                        id=10 + sweep))
    nwbfile.intracellular_recordings.add_column(name="quality", description="q", data=[0.1, 0.2, 0.3])
    simultaneous = [nwbfile.add_icephys_simultaneous_recording(recordings=[r]) for r in rows]
    nwbfile.icephys_simultaneous_recordings.add_column(name="temperature", description="t", data=[30.0, 31.0, 32.0])
    sequential = [nwbfile.add_icephys_sequential_recording(simultaneous_recordings=simultaneous[:2],
                                                           stimulus_type="ramp"),
                  nwbfile.add_icephys_sequential_recording(simultaneous_recordings=simultaneous[2:],
                                                           stimulus_type="step")]
    repetition = nwbfile.add_icephys_repetition(sequential_recordings=sequential)
    nwbfile.add_icephys_experimental_condition(repetitions=[repetition], id=7)
    nwbfile.icephys_experimental_conditions.add_column(name="tag", description="tag", data=["control"])
    return nwbfile.icephys_experimental_conditions


_flex("IntracellularElectrode", lambda f: micephys.mock_IntracellularElectrode(nwbfile=f))
_flex("CurrentClampSeries", lambda f: micephys.mock_CurrentClampSeries(nwbfile=f))
_flex("VoltageClampSeries", lambda f: micephys.mock_VoltageClampSeries(nwbfile=f))
_flex("IZeroClampSeries", lambda f: micephys.mock_IZeroClampSeries(nwbfile=f))
_flex("CurrentClampStimulusSeries", lambda f: micephys.mock_CurrentClampStimulusSeries(nwbfile=f))
_flex("VoltageClampStimulusSeries", lambda f: micephys.mock_VoltageClampStimulusSeries(nwbfile=f))
_flex("IntracellularRecordingsTable", lambda f: micephys.mock_IntracellularRecordingsTable(nwbfile=f))
# the whole hierarchy: intracellular recordings < simultaneous < sequential < repetitions < conditions,
# with custom columns, a recording without stimulus and TimeSeriesReferenceVectorData
_flex("IcephysMetadataTables", _icephys_tables)

# ---- behavior --------------------------------------------------------------------


def _interface(cls, series_factory):
    def add(nwbfile):
        interface = cls(series_factory())
        nwbfile.create_processing_module(name="behavior", description="behavior").add(interface)
        return interface
    return add


_flex("SpatialSeries", lambda f: mbehavior.mock_SpatialSeries(nwbfile=f))
_flex("Position", lambda f: mbehavior.mock_Position(nwbfile=f))
_flex("PupilTracking", lambda f: mbehavior.mock_PupilTracking(nwbfile=f))
_flex("CompassDirection", lambda f: mbehavior.mock_CompassDirection(nwbfile=f))
_flex("EyeTracking", _interface(behavior.EyeTracking, lambda: mbehavior.mock_SpatialSeries(name="eye")))
_flex("BehavioralEvents", _interface(behavior.BehavioralEvents, lambda: mbase.mock_TimeSeries(
    name="licks", timestamps=[0.5, 1.0, 3.0], data=[1, 1, 1])))
_flex("BehavioralTimeSeries", _interface(behavior.BehavioralTimeSeries, lambda: mbase.mock_TimeSeries(name="run")))
_flex("BehavioralEpochs", _interface(behavior.BehavioralEpochs, lambda: misc.IntervalSeries(
    name="running", timestamps=[1.0, 2.0, 5.0, 7.0], data=[1, -1, 1, -1])))

# ---- images ----------------------------------------------------------------------


def _index_series(nwbfile):
    images = _images(nwbfile)
    series = image.IndexSeries(name="shown", data=[0, 1, 0], indexed_images=images, timestamps=[0.0, 1.0, 2.0],
                               unit="N/A")
    nwbfile.add_stimulus(series)
    return series


_flex("ImageSeries", lambda f: f.add_acquisition(image.ImageSeries(
    name="movie", data=np.arange(24, dtype="uint8").reshape(2, 3, 4), unit="n.a.", rate=30.0)) or
    f.acquisition["movie"])
_flex("ImageSeriesExternalFile", lambda f: f.add_acquisition(image.ImageSeries(
    name="external", external_file=["video1.mp4", "video2.mp4"], starting_frame=[0, 2], format="external",
    unit="n.a.", timestamps=[0.0, 0.1, 0.2, 0.3])) or f.acquisition["external"])
_flex("OpticalSeries", lambda f: f.add_stimulus(image.OpticalSeries(
    name="optical", data=np.ones((2, 3, 4), "uint8"), unit="n.a.", rate=10.0, distance=0.7,
    field_of_view=[0.2, 0.3], orientation="lower left")) or f.stimulus["optical"])
_flex("IndexSeries", _index_series)

# ---- ogen --------------------------------------------------------------------------
_flex("OptogeneticStimulusSite", lambda f: mogen.mock_OptogeneticStimulusSite(nwbfile=f))
_flex("OptogeneticSeries", lambda f: mogen.mock_OptogeneticSeries(nwbfile=f))

# ---- ophys -------------------------------------------------------------------------
_flex("ImagingPlane", lambda f: mophys.mock_ImagingPlane(nwbfile=f))
_flex("OnePhotonSeries", lambda f: mophys.mock_OnePhotonSeries(starting_frame=None, nwbfile=f))
_flex("TwoPhotonSeries", lambda f: mophys.mock_TwoPhotonSeries(starting_frame=None, nwbfile=f))
_flex("PlaneSegmentation", lambda f: mophys.mock_PlaneSegmentation(nwbfile=f))
_flex("ImageSegmentation", lambda f: mophys.mock_ImageSegmentation(nwbfile=f))
_flex("RoiResponseSeries", lambda f: mophys.mock_RoiResponseSeries(nwbfile=f))  # a DynamicTableRegion of ROIs
_flex("Fluorescence", lambda f: mophys.mock_Fluorescence(nwbfile=f))
_flex("DfOverF", lambda f: mophys.mock_DfOverF(nwbfile=f))

# ---- retinotopy (no Python class in pynwb 4: the schema's generated class) -----------------------------
ImagingRetinotopy = get_class("ImagingRetinotopy", "core")


def _retinotopy(nwbfile):
    field = dict(dimension=[2, 3], field_of_view=[1.0, 2.0])
    maps = {f"axis_{i}_{kind}_map": np.arange(6.0).reshape(2, 3) * i for i in (1, 2) for kind in ("phase", "power")}
    kwargs = dict(maps, axis_descriptions=["altitude", "azimuth"], vasculature_image=np.ones((2, 3), "uint16"),
                  vasculature_image__bits_per_pixel=16, vasculature_image__format="raw")
    for name in maps:
        kwargs.update({f"{name}__dimension": field["dimension"], f"{name}__field_of_view": field["field_of_view"],
                       f"{name}__unit": "degrees"})
    kwargs.update(vasculature_image__dimension=field["dimension"], vasculature_image__field_of_view=[1.0, 2.0])
    retinotopy = ImagingRetinotopy(**kwargs)
    nwbfile.create_processing_module(name="retinotopy", description="maps").add(retinotopy)
    return retinotopy


_flex("ImagingRetinotopy", _retinotopy)

# ---- misc --------------------------------------------------------------------------


def _units(nwbfile):
    electrodes = _electrodes_table(nwbfile)
    units = mecephys.mock_Units(num_units=3, nwbfile=nwbfile)
    units.add_column(name="electrodes", description="a reference per unit", table=electrodes,
                     data=[0, 1, 2, 3, 3, 0], index=[2, 4, 6])
    return units


def _decomposition(nwbfile):
    source = mbase.mock_TimeSeries(name="source", data=np.ones((10, 3)), nwbfile=nwbfile)
    series = misc.DecompositionSeries(name="bands", data=np.ones((10, 3, 2)), metric="power", rate=10.0,
                                      description="power", source_timeseries=source)  # a link
    series.add_band(band_name="theta", band_limits=(4.0, 8.0), band_mean=6.0, band_stdev=1.0)
    series.add_band(band_name="gamma", band_limits=(30.0, 80.0), band_mean=55.0, band_stdev=10.0)
    nwbfile.create_processing_module(name="ecephys", description="bands").add(series)
    return series


_flex("Units", _units)  # ragged columns and a DynamicTableRegion of electrodes
_flex("DecompositionSeries", _decomposition)
_flex("AnnotationSeries", lambda f: f.add_acquisition(misc.AnnotationSeries(
    name="notes", data=["start", "stop"], timestamps=[0.0, 1.0])) or f.acquisition["notes"])
_flex("AbstractFeatureSeries", lambda f: f.add_acquisition(misc.AbstractFeatureSeries(
    name="features", data=np.ones((3, 2)), feature_units=["a", "b"], features=["x", "y"], rate=1.0))
    or f.acquisition["features"])
_flex("IntervalSeries", lambda f: f.add_acquisition(misc.IntervalSeries(
    name="intervals", timestamps=[1.0, 2.0], data=[1, -1])) or f.acquisition["intervals"])

# ---- file-level metadata --------------------------------------------------------------


def _metadata(nwbfile):
    for name, value in dict(experimenter=("Ada", "Bob"), keywords=["a", "b"], related_publications=("doi:1",),
                            lab="lab", institution="inst", experiment_description="exp", session_id="s1",
                            notes="n", pharmacology="none", protocol="p", slices="s", source_script="x.py",
                            stimulus_notes="sn", surgery="su", virus="v", data_collection="dc",
                            source_script_file_name="x.py").items():
        setattr(nwbfile, name, value)
    nwbfile.subject = mfile.mock_Subject()
    return nwbfile


def _epochs(nwbfile):
    series = mbase.mock_TimeSeries(nwbfile=nwbfile)
    nwbfile.add_epoch_column(name="kind", description="kind of epoch")
    nwbfile.add_epoch(start_time=0.0, stop_time=1.0, tags=["a"], timeseries=[series], kind="rest")  # references
    nwbfile.add_epoch(start_time=1.0, stop_time=3.0, tags=["b", "c"], timeseries=[series], kind="run")
    return nwbfile.epochs


def _trials(nwbfile):
    nwbfile.add_trial_column(name="correct", description="whether correct")
    for i in range(3):
        nwbfile.add_trial(start_time=float(i), stop_time=i + 0.5, correct=bool(i % 2))
    return nwbfile.trials


def _invalid_times(nwbfile):
    nwbfile.add_invalid_time_interval(start_time=0.0, stop_time=0.5)
    return nwbfile.invalid_times


def _dynamic_table(nwbfile):
    table = DynamicTable(name="sessions", description="custom table",
                         columns=[VectorData(name="quality", description="q", data=[0.5, 0.9])])
    nwbfile.add_acquisition(table)
    return table


_flex("NWBFileMetadata", _metadata)
_flex("Subject", lambda f: mfile.mock_Subject(nwbfile=f))
_flex("Epochs", _epochs)
_flex("Trials", _trials)
_flex("InvalidTimes", _invalid_times)
_flex("DynamicTable", _dynamic_table)

# ---- links inside the file ------------------------------------------------------------


def _timestamps_link(nwbfile):
    first = mbase.mock_TimeSeries(name="first", timestamps=[0.0, 1.0, 2.0, 3.0], nwbfile=nwbfile)
    return mbase.mock_TimeSeries(name="second", timestamps=first, nwbfile=nwbfile)  # timestamps: a soft link


def _data_link(nwbfile):
    first = mbase.mock_TimeSeries(name="first", nwbfile=nwbfile)
    return mbase.mock_TimeSeries(name="second", data=first, nwbfile=nwbfile)  # data: a soft link


_flex("TimestampsLink", _timestamps_link)
_flex("DataLink", _data_link)


# ---- hdmf's own mixin (an hdmf-common container, hdmf's BuildManager) -------------------
class _HDMFTable(H5RoundTripMixin):
    """``hdmf.testing.H5RoundTripMixin`` with the NWB IO class in place of its ``HDF5IO``."""

    io_class = NWBHDF5IO

    def setUp(self):
        import hdmf.testing.testcase as hdmf_testcase

        io_class = self.io_class

        class ForHDMF(io_class):  # the file is an hdmf file: it has no nwb_version for pynwb's read check
            def read(self, **kwargs):
                return super().read(skip_version_check=True, **kwargs)

        patcher = mock.patch.object(hdmf_testcase, "HDF5IO", ForHDMF)  # where the mixin writes, reads, exports
        patcher.start()
        self.addCleanup(patcher.stop)
        super().setUp()

    def setUpContainer(self):
        return DynamicTable(name="table", description="hdmf table",
                            columns=[VectorData(name="x", description="x", data=[1, 2, 3])])

    def roundtripContainer(self, cache_spec=False):
        read = super().roundtripContainer(cache_spec=cache_spec)
        assert isinstance(self.reader, self.io_class)
        assert self.container.container_source == read.container_source == os.path.abspath(self.filename)
        assert _leftovers() == []
        return read


for _io in IO_CLASSES:
    globals()[f"TestHDMFMixin_{_io.__name__}"] = type(f"TestHDMFMixin_{_io.__name__}", (_HDMFTable, TestCase),
                                                      {"io_class": _io})


def test_every_family_runs_with_both_io_classes():
    """The generated classes: every case twice, and every family the issue lists."""
    names = [n for n in globals() if n.startswith("Test") and n.endswith(("_NWBHDF5IO", "_NWBDaskIO"))]
    cases = Counter(n.rsplit("_", 1)[0] for n in names)
    assert set(cases.values()) == {2}
    for kind in ("NWBHDF5IO", "NWBDaskIO"):
        assert sum(n.endswith(kind) for n in names) == len(cases)
    families = ["TimeSeries", "Images", "Device", "ElectricalSeries", "IcephysMetadataTables", "Position",
                "ImageSeries", "OptogeneticSeries", "TwoPhotonSeries", "ImagingRetinotopy", "Units",
                "NWBFileMetadata", "TimestampsLink", "HDMFMixin"]
    assert all(f"Test{f}" in cases for f in families)
