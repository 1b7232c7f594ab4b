"""The package's layout is checked, not hoped for (issue 16; see docs/architecture.md).

* ``LAYERS`` places every module of ``nwb_dask`` in one layer; a new module
  must be placed here before the suite passes.
* Every import (module level or inside a function, ``import x`` or
  ``from x import y``, absolute or relative) goes to a lower layer, or to the
  same layer inside the same package directory; there are no import cycles.
* No private name (``_x``; dunders are fine) of one module is imported or
  reached (``module._x``) by another.
* No module is over 700 lines.
* ``nwb_dask.__all__`` is the narrow public API below, every name documented,
  and ``import nwb_dask`` stays light (no distributed, mpi4py, hdmf_zarr).
* ``read_nwb`` / ``write_nwb`` / ``read_dataset`` choose HDF5 or Zarr by
  ``nwb_dask.api.is_zarr`` the same way in both directions.

Each checker is a plain function over a package directory, proved able to
fail on synthetic packages and on a deliberately broken copy of nwb_dask.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import pytest

import nwb_dask
import nwb_dask.api
from nwb_dask.testing import ephys_nwbfile

PACKAGE = "nwb_dask"
PACKAGE_DIR = Path(nwb_dask.__file__).resolve().parent
MAX_LINES = 700

# --------------------------------------------------------------------------- #
# The layer table: the one place that says where a module belongs             #
# --------------------------------------------------------------------------- #
# "pkg.sub.*" places the package ``pkg.sub`` and every module under it (a
# subpackage that is all one layer); any other key is one module exactly.
LAYERS: dict[str, int] = {
    # L0: no nwb_dask imports below them
    "nwb_dask.errors": 0,       # error types and messages naming file/dataset/block
    "nwb_dask.blocks": 0,       # block dtype rule, as_dask_array
    "nwb_dask.atomic": 0,       # the output rule: temporary name, fsync, rename, cleanup
    "nwb_dask.compat": 0,       # every reach into hdmf / hdmf-zarr / pynwb internals
    "nwb_dask.version": 0,      # __version__, compared with a cluster's workers' (nwb_dask.cluster)
    # L1
    "nwb_dask.chunking": 1,     # chunk shapes, block alignment
    "nwb_dask.codecs.*": 1,     # codec registry, filter families, the gate
    # L2
    "nwb_dask.engine": 2,       # the one bounded executor
    "nwb_dask.encoding": 2,     # the encode step, EncodedBlock, the same-host handover files
    "nwb_dask.cluster": 2,      # the engine's window on a dask.distributed cluster (batches, direct fetch)
    "nwb_dask.sources.*": 2,    # byte sources (local, http, fsspec), ranges
    # L3: HDF5 and Zarr without NWB knowledge
    "nwb_dask.hdf5": 3,
    "nwb_dask.hdf5.read": 3,
    "nwb_dask.hdf5.prefetch": 3,
    "nwb_dask.hdf5.structures": 3,
    "nwb_dask.hdf5.write": 3,
    "nwb_dask.hdf5.shards": 3,  # sharded writes: part files written by one worker each, raw chunk copies
    "nwb_dask.zarr": 3,
    "nwb_dask.zarr.read": 3,
    "nwb_dask.zarr.sink": 3,
    # L4: NWB on HDF5
    "nwb_dask.nwb": 4,
    "nwb_dask.nwb.iterators": 4,
    "nwb_dask.nwb.dataio": 4,
    "nwb_dask.nwb.queue": 4,
    "nwb_dask.nwb.links": 4,
    "nwb_dask.nwb.virtual": 4,
    "nwb_dask.nwb.read": 4,
    "nwb_dask.nwb.index": 4,
    "nwb_dask.nwb.io": 4,
    "nwb_dask.nwb.shards": 4,   # sharded writes: the parts directory, the virtual dataset, pinned part tasks
    "nwb_dask.nwb.labelled": 4,  # to_xarray: TimeSeries as labelled, lazy xarray DataArrays
    # L5
    "nwb_dask.zarr.io": 5,
    "nwb_dask.tools": 5,
    "nwb_dask.tools.migrations": 5,
    "nwb_dask.live.*": 5,
    # L6
    "nwb_dask.tools.repack": 6,
    "nwb_dask.tools.convert": 6,
    "nwb_dask.tools.consolidate": 6,
    "nwb_dask.tools.info": 6,
    "nwb_dask.tools.index": 6,
    "nwb_dask.tools.verify": 6,
    "nwb_dask.mpi": 6,
    # L7
    "nwb_dask.api": 7,
    "nwb_dask.testing": 7,
    # L8
    "nwb_dask.demo": 8,
    "nwb_dask.cli": 8,
    "nwb_dask": 8,
}
# Entries for modules that issue 16's other steps are creating (compat.py,
# tools/verify.py); drop a name from here once its module is on main.
PLANNED: set[str] = set()

# The narrow public API (docs/architecture.md, nwb_dask/__init__.py).
PUBLIC_API = [
    "BlockDtypeError",
    "ChunkShapeError",
    "Codec",
    "CodecError",
    "DaskDataChunkIterator",
    "DaskDataIO",
    "LinkMismatchError",
    "NWBDaskIO",
    "SegmentError",
    "StreamWriter",
    "WriteError",
    "WriteStats",
    "audit_links",
    "available_codecs",
    "codec",
    "consolidate",
    "convert",
    "external_data",
    "growing",
    "info",
    "join_segments",
    "join_timeseries",
    "read_dataset",
    "read_nwb",
    "register_codec",
    "repack",
    "to_xarray",
    "write_dask_array",
    "write_nwb",
    "write_nwb_zarr",
]

# Known cases while issue 16's splits are in flight: each mark goes when its split lands
# (strict: a case that starts passing fails the suite until its mark is dropped).
KNOWN_LONG: dict[str, str] = {}
KNOWN_PRIVATE: dict[str, str] = {}
KNOWN_LAYERING: dict[str, str] = {}


# --------------------------------------------------------------------------- #
# The checkers (plain functions over a package directory)                     #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Import:
    source: str      # importing module
    target: str      # imported module (a submodule when ``from pkg import sub`` names one)
    name: str | None  # the name taken from the module (``from target import name``), if any
    line: int


def discover(package_dir: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package, *path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _from_target(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> list[Import]:
    """All imports of the package's modules in one file: module level and function level."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    found.append(Import(module, alias.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(module, path, node)
            if not (target == package or target.startswith(package + ".")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    found.append(Import(module, sub, None, node.lineno))
                else:
                    found.append(Import(module, target, alias.name, node.lineno))
    return found


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    """The module's layer: its own entry, else the nearest ``pkg.*`` entry above it."""
    if module in layers:
        return layers[module]
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n]) + ".*"
        if key in layers:
            return layers[key]
    return None


def unplaced(modules: dict[str, Path], layers: dict[str, int]) -> list[str]:
    return sorted(m for m in modules if layer_of(m, layers) is None)


def import_graph(modules: dict[str, Path], package: str = PACKAGE) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for imp in imports_of(module, path, modules, package):
            if imp.target in modules and imp.target != module:
                graph[module].add(imp.target)
    return graph


def layering_violations(module: str, modules: dict[str, Path], layers: dict[str, int],
                        package: str = PACKAGE) -> list[str]:
    """Imports of ``module`` that do not go down (nor sideways inside one package directory)."""
    here = layer_of(module, layers)
    if here is None:
        return [f"{module} is not in the layer table"]
    problems = []
    for imp in imports_of(module, modules[module], modules, package):
        if imp.target == module:
            continue
        where = f"{modules[module].name}:{imp.line}"
        if imp.target not in modules:
            problems.append(f"{module} ({where}) imports {imp.target}, which is not a module of {package}")
            continue
        there = layer_of(imp.target, layers)
        if there is None:
            problems.append(f"{module} ({where}) imports {imp.target}, which is not in the layer table")
        elif there > here:
            problems.append(f"{module} (L{here}, {where}) imports {imp.target} (L{there}): an upward import")
        elif there == here and modules[imp.target].parent != modules[module].parent:
            problems.append(f"{module} (L{here}, {where}) imports {imp.target} (L{there}): "
                            "same layer, other package")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def private_uses(module: str, modules: dict[str, Path], package: str = PACKAGE) -> list[str]:
    """Private names of other modules that ``module`` imports or reaches as ``mod._name``."""
    path = modules[module]
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for imp in imports_of(module, path, modules, package):
        if imp.name is not None and _is_private(imp.name) and imp.target != module:
            problems.append(f"{module} ({path.name}:{imp.line}) imports {imp.name} from {imp.target}")
    bound: dict[str, str] = {}  # local name -> the module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:  # ``import a.b.c`` binds ``a``
                        bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(module, path, node)
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{target}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain = _dotted(node.value)
            if chain is None:
                continue
            head, _, rest = chain.partition(".")
            if head not in bound:
                continue
            target = bound[head] + ("." + rest if rest else "")
            if target in modules and target != module:
                problems.append(f"{module} ({path.name}:{node.lineno}) reaches {target}.{node.attr}")
    return problems


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


# --------------------------------------------------------------------------- #
# The checks on nwb_dask itself, one test per module                           #
# --------------------------------------------------------------------------- #
MODULES = discover(PACKAGE_DIR)


def _per_module(known: dict[str, str]):
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=known[m])) if m in known else m
            for m in sorted(MODULES)]


def test_every_module_is_placed():
    assert unplaced(MODULES, LAYERS) == [], "place every new module in LAYERS (tests/test_architecture.py)"


def test_no_stale_layer_entries():
    stale = []
    for key in LAYERS:
        name = key[:-2] if key.endswith(".*") else key
        if name not in MODULES and name not in PLANNED:
            stale.append(key)
    assert stale == []
    assert PLANNED <= set(LAYERS)


@pytest.mark.parametrize("module", _per_module(KNOWN_LAYERING))
def test_imports_go_down(module):
    assert layering_violations(module, MODULES, LAYERS) == []


def test_no_import_cycles():
    assert cycles(import_graph(MODULES)) == []


@pytest.mark.parametrize("module", _per_module(KNOWN_PRIVATE))
def test_no_private_names_across_modules(module):
    assert private_uses(module, MODULES) == []


@pytest.mark.parametrize("module", _per_module(KNOWN_LONG))
def test_module_size(module):
    assert line_count(MODULES[module]) <= MAX_LINES, f"{MODULES[module]}: {line_count(MODULES[module])} lines"


def test_known_cases_name_real_modules():
    for known in (KNOWN_LONG, KNOWN_PRIVATE, KNOWN_LAYERING):
        assert set(known) <= set(MODULES)


ARCHITECTURE_PAGE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _doc_path(key: str) -> str:
    """How docs/architecture.md names a LAYERS entry: ``tools/repack.py``, ``codecs/``, ``__init__.py``."""
    if key.endswith(".*"):
        return key[len(PACKAGE) + 1:-2].replace(".", "/") + "/"
    if key in MODULES:
        return MODULES[key].relative_to(PACKAGE_DIR).as_posix()
    return key[len(PACKAGE) + 1:].replace(".", "/") + ".py"


def documented_layers(text: str) -> dict[str, int]:
    """The layer diagram of docs/architecture.md: ``{path: layer}``, from the text block after '## The layers'."""
    block = text.split("## The layers", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    layers, layer = {}, None
    for line in block.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0][0] == "L" and words[0][1:].isdigit():
            layer = int(words[0][1:])
            words = words[1:]
        layers[words[0]] = layer
    return layers


def test_architecture_page_shows_the_layer_table():
    """docs/architecture.md's diagram has one line per LAYERS entry, in the same layer."""
    documented = documented_layers(ARCHITECTURE_PAGE.read_text())
    assert documented == {_doc_path(k): v for k, v in LAYERS.items()}


def resolve(dotted: str):
    """The object a dotted ``nwb_dask.x.y`` name stands for (ImportError/AttributeError if none)."""
    import importlib

    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for attr in parts[n:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def named_objects(text: str) -> list[str]:
    """Every backquoted ``nwb_dask.`` name of a page (calls' ``(...)`` dropped)."""
    import re

    return sorted({m.split("(")[0] for m in re.findall(r"`(nwb_dask(?:\.\w+)+)[^`]*`", text)})


def missing_names(text: str) -> list[str]:
    missing = []
    for name in named_objects(text):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    return missing


def test_architecture_page_names_real_objects():
    """Each nwb_dask name the page gives as the home of a rule exists."""
    assert missing_names(ARCHITECTURE_PAGE.read_text()) == []


DOC_PAGES = [ARCHITECTURE_PAGE.parents[1] / "README.md",
             *sorted(p for p in ARCHITECTURE_PAGE.parent.glob("*.md") if p != ARCHITECTURE_PAGE)]
KNOWN_OLD_NAMES: dict[str, str] = {}


@pytest.mark.parametrize("page", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_OLD_NAMES[p.name]))
    if p.name in KNOWN_OLD_NAMES else p for p in DOC_PAGES], ids=lambda p: p.name)
def test_docs_name_no_old_modules(page):
    """README and docs pages name only nwb_dask objects that exist (no nwb_dask.reader, .synthetic, ...)."""
    assert missing_names(page.read_text()) == []


def test_missing_names_sees_a_wrong_name():
    page = "`nwb_dask.chunking.check_chunk_shape` `nwb_dask.engine.no_such_thing` `nwb_dask.nope.x`"
    assert named_objects(page) == ["nwb_dask.chunking.check_chunk_shape", "nwb_dask.engine.no_such_thing",
                                   "nwb_dask.nope.x"]
    assert missing_names(page) == ["nwb_dask.engine.no_such_thing", "nwb_dask.nope.x"]


def test_documented_layers_parser_sees_a_wrong_diagram():
    text = "## The layers\n```text\nL2  engine.py   x\n    codecs/     y\nL0  errors.py   z\n```\n"
    assert documented_layers(text) == {"engine.py": 2, "codecs/": 2, "errors.py": 0}
    assert documented_layers(text) != {_doc_path(k): v for k, v in LAYERS.items()}


# --------------------------------------------------------------------------- #
# The checkers can fail: synthetic packages                                    #
# --------------------------------------------------------------------------- #
def make_package(root: Path, files: dict[str, str], package: str = "fake") -> tuple[Path, dict[str, Path]]:
    """Write ``{relative path: source}`` as package ``package`` under ``root``."""
    pkg = root / package
    for rel, source in {"__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return pkg, discover(pkg, package)


FAKE_LAYERS = {"fake": 9, "fake.low": 0, "fake.mid": 1, "fake.high": 2, "fake.sub": 1,
               "fake.sub.a": 1, "fake.sub.b": 1, "fake.other": 1, "fake.box.*": 1}


def _violations(mods, module, layers=FAKE_LAYERS):
    return layering_violations(module, mods, layers, package="fake")


@pytest.mark.parametrize("source", [
    "from fake.high import f\n",
    "import fake.high\n",
    "import fake.high as h\n",
    "from fake import high\n",
    "from . import high\n",
    "from .high import f\n",
    "def g():\n    from fake.high import f\n    return f\n",
    "class C:\n    def m(self):\n        import fake.high\n",
    "if True:\n    try:\n        from fake.high import f\n    except ImportError:\n        pass\n",
])
def test_upward_import_is_found(tmp_path, source):
    _, mods = make_package(tmp_path, {"low.py": source, "high.py": "def f(): pass\n", "mid.py": ""})
    problems = _violations(mods, "fake.low")
    assert len(problems) == 1 and "fake.high (L2): an upward import" in problems[0], problems
    assert "low.py:" in problems[0]


def test_downward_and_same_package_imports_pass(tmp_path):
    _, mods = make_package(tmp_path, {
        "low.py": "import os\nimport numpy\n",
        "mid.py": "from fake.low import x\n",
        "high.py": "from fake import mid, low\nfrom .mid import y\n",
        "sub/__init__.py": "from fake.sub.a import f\n",
        "sub/a.py": "from fake.sub.b import g\ndef f(): pass\n",
        "sub/b.py": "from . import __name__ as n\ndef g(): pass\n",
        "other.py": "",
    })
    for module in mods:
        assert _violations(mods, module) == [], module


def test_same_layer_other_package_is_found(tmp_path):
    _, mods = make_package(tmp_path, {"low.py": "", "mid.py": "", "high.py": "",
                                      "sub/__init__.py": "", "sub/a.py": "from fake.other import f\n",
                                      "sub/b.py": "", "other.py": "def f(): pass\n"})
    problems = _violations(mods, "fake.sub.a")
    assert problems == ["fake.sub.a (L1, a.py:1) imports fake.other (L1): same layer, other package"]


def test_wildcard_places_a_whole_subpackage_and_only_it(tmp_path):
    _, mods = make_package(tmp_path, {"low.py": "", "mid.py": "", "high.py": "",
                                      "box/__init__.py": "from fake.box.part import x\n",
                                      "box/part.py": "from fake.high import f\n",
                                      "stray.py": "", "sub/__init__.py": "", "sub/new.py": ""})
    assert layer_of("fake.box.part", FAKE_LAYERS) == 1
    assert unplaced(mods, FAKE_LAYERS) == ["fake.stray", "fake.sub.new"]
    assert _violations(mods, "fake.box") == []
    assert "an upward import" in _violations(mods, "fake.box.part")[0]
    assert _violations(mods, "fake.stray") == ["fake.stray is not in the layer table"]


def test_import_of_unplaced_or_missing_module_is_found(tmp_path):
    _, mods = make_package(tmp_path, {"low.py": "", "mid.py": "import fake.stray\nfrom fake.gone import x\n",
                                      "high.py": "", "stray.py": ""})
    problems = _violations(mods, "fake.mid")
    assert "fake.stray, which is not in the layer table" in problems[0]
    assert "fake.gone, which is not a module of fake" in problems[1]


def test_cycles_are_found_function_level_included(tmp_path):
    _, mods = make_package(tmp_path, {
        "low.py": "",
        "sub/__init__.py": "",
        "sub/a.py": "from fake.sub.b import g\n",
        "sub/b.py": "def g():\n    from fake.sub import a\n    return a\n",
        "mid.py": "from fake.high import x\n", "high.py": "from fake.mid import y\n",
    })
    assert cycles(import_graph(mods, "fake")) == [["fake.high", "fake.mid"], ["fake.sub.a", "fake.sub.b"]]
    # a chain is not a cycle
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("source, expected", [
    ("from fake.low import _helper\n", "imports _helper from fake.low"),
    ("from .low import _helper as h\n", "imports _helper from fake.low"),
    ("def f():\n    from fake.low import _helper\n", "imports _helper from fake.low"),
    ("import fake.low\nfake.low._helper()\n", "reaches fake.low._helper"),
    ("import fake.low as lo\nlo._helper()\n", "reaches fake.low._helper"),
    ("from fake import low\nlow._STATE = 1\n", "reaches fake.low._STATE"),
    ("from fake.sub import a\nprint(a._x)\n", "reaches fake.sub.a._x"),
])
def test_private_names_are_found(tmp_path, source, expected):
    _, mods = make_package(tmp_path, {"low.py": "_helper = _STATE = 0\n", "user.py": source,
                                      "sub/__init__.py": "", "sub/a.py": "_x = 1\n"})
    problems = private_uses("fake.user", mods, "fake")
    assert len(problems) == 1 and expected in problems[0], problems


def test_dunders_and_own_privates_pass(tmp_path):
    _, mods = make_package(tmp_path, {
        "low.py": "__version__ = '1'\n_mine = 1\nprint(_mine)\n",
        "user.py": "from fake.low import __version__\nimport fake.low\nprint(fake.low.__name__)\n"
                   "import os\nos._exit\nclass C:\n    _x = 1\nC._x\n",
    })
    assert private_uses("fake.user", mods, "fake") == []
    assert private_uses("fake.low", mods, "fake") == []


def test_long_module_is_found(tmp_path):
    _, mods = make_package(tmp_path, {"ok.py": "x = 1\n" * MAX_LINES, "long.py": "x = 1\n" * (MAX_LINES + 1)})
    assert line_count(mods["fake.ok"]) <= MAX_LINES < line_count(mods["fake.long"])


def test_a_broken_copy_of_nwb_dask_fails_every_check(tmp_path):
    """Each rule, broken once in a copy of the real package, is caught by its checker."""
    copy = tmp_path / PACKAGE
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert all(layering_violations(m, discover(copy), LAYERS) == []
               for m in discover(copy) if m not in KNOWN_LAYERING)
    with (copy / "errors.py").open("a") as f:  # L0 reaching L8, inside a function, and a private name
        f.write("\n\ndef _broken():\n    from nwb_dask.cli import main\n    from nwb_dask.chunking import _nope\n"
                "    return main, _nope\n")
    with (copy / "chunking.py").open("a") as f:  # closes a cycle chunking -> errors -> chunking
        f.write("\n\ndef _also_broken():\n    import nwb_dask.errors\n    return nwb_dask.errors\n")
    (copy / "newthing.py").write_text("x = 1\n" * (MAX_LINES + 5))
    mods = discover(copy)
    problems = layering_violations("nwb_dask.errors", mods, LAYERS)
    assert any("imports nwb_dask.cli (L8): an upward import" in p for p in problems), problems
    assert any("imports nwb_dask.chunking (L1): an upward import" in p for p in problems), problems
    found = cycles(import_graph(mods))
    assert any({"nwb_dask.chunking", "nwb_dask.errors"} <= set(c) for c in found), found
    line = problems_line(copy / "errors.py", "_nope")
    assert private_uses("nwb_dask.errors", mods) == [
        f"nwb_dask.errors (errors.py:{line}) imports _nope from nwb_dask.chunking"]
    assert unplaced(mods, LAYERS) == ["nwb_dask.newthing"]
    assert line_count(mods["nwb_dask.newthing"]) > MAX_LINES


def problems_line(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if f"import {needle}" in line)


# --------------------------------------------------------------------------- #
# The public API                                                               #
# --------------------------------------------------------------------------- #
def test_public_api_is_the_narrow_list():
    assert sorted(nwb_dask.__all__) == sorted(PUBLIC_API)
    assert len(set(nwb_dask.__all__)) == len(nwb_dask.__all__)
    public = sorted(n for n in vars(nwb_dask) if not n.startswith("_")
                    and not isinstance(getattr(nwb_dask, n), type(nwb_dask)))  # subpackages are fine
    assert public == sorted(PUBLIC_API), "a public name outside __all__ in nwb_dask/__init__.py"


@pytest.mark.parametrize("name", PUBLIC_API)
def test_public_name_has_a_docstring(name):
    obj = getattr(nwb_dask, name)
    own = vars(obj).get("__doc__") if isinstance(obj, type) else obj.__doc__  # a class: not inherited
    assert own and own.strip(), f"nwb_dask.{name} has no docstring of its own"


def test_public_api_names_documented_in_module_docstring():
    doc = nwb_dask.__doc__
    assert all(name in doc for name in PUBLIC_API), [n for n in PUBLIC_API if n not in doc]


HEAVY = ("distributed", "zarr", "mpi4py", "hdmf_zarr")
NOT_IMPORTED = {"distributed", "mpi4py"}  # by ``import nwb_dask``
_SYS_MODULES = "import sys, json; {imports}; print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))"


def _imported_after(imports: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _SYS_MODULES.format(imports=imports, heavy=HEAVY)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_import_nwb_dask_stays_light():
    """``import nwb_dask`` pulls in no cluster or MPI machinery, nothing beyond its hard dependencies.

    zarr is imported by hdmf (which pynwb needs) when it is installed.
    hdmf-zarr, zarr and lindi are extras (``[zarr]``, ``[index]``):
    ``NWBZarrDaskIO`` is built on first use, so ``import nwb_dask`` does not
    import hdmf_zarr (the baseline leaves it out).
    """
    ours = _imported_after("import nwb_dask")
    baseline = _imported_after("import numpy, h5py, hdf5plugin, dask.array, hdmf, pynwb")
    assert "hdmf_zarr" not in ours, ours
    assert not NOT_IMPORTED & set(ours), ours
    assert set(ours) <= set(baseline), f"import nwb_dask adds {sorted(set(ours) - set(baseline))}"
    # the check can fail: a light module that does import them is seen
    assert _imported_after("import distributed, mpi4py") == ["distributed", "mpi4py"]


# --------------------------------------------------------------------------- #
# HDF5 or Zarr: one rule, both directions                                      #
# --------------------------------------------------------------------------- #
def _series(seed: int = 0) -> tuple[np.ndarray, object]:
    values = np.random.default_rng(seed).integers(-2000, 2000, size=(3000, 8), dtype=np.int16)
    return values, ephys_nwbfile(nwb_dask.DaskDataIO(da.from_array(values, chunks=(1000, 8))))


@pytest.mark.parametrize("name, zarr_store", [("session.nwb", False), ("session.nwb.zarr", True),
                                              ("session.zarr", True)])
def test_write_then_read_chooses_the_same_backend(tmp_path, name, zarr_store):
    path = tmp_path / name
    assert nwb_dask.api.is_zarr(path) is zarr_store  # by the name, before anything exists
    values, nwbfile = _series()
    nwb_dask.write_nwb(nwbfile, path, progress=False, scheduler="sync")
    assert path.is_dir() is zarr_store and path.is_file() is not zarr_store
    assert nwb_dask.api.is_zarr(path) is zarr_store  # and by what was written
    if not zarr_store:
        with h5py.File(path, "r") as f:  # a plain HDF5 file
            np.testing.assert_array_equal(f["acquisition/ElectricalSeries/data"][()], values)
    else:
        assert (path / ".zgroup").is_file()
    nwb = nwb_dask.read_nwb(path, min_bytes=1)
    try:
        data = nwb.acquisition["ElectricalSeries"].data
        assert isinstance(data, da.Array)
        np.testing.assert_array_equal(data.compute(), values)
    finally:
        nwb.read_io.close()
    lazy = nwb_dask.read_dataset(path, "acquisition/ElectricalSeries/data")
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), values)


def test_is_zarr_rule(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    store = tmp_path / "store"
    store.mkdir()
    (store / ".zgroup").write_text('{"zarr_format": 2}')
    assert not nwb_dask.api.is_zarr(plain)          # an ordinary directory is not a store
    assert nwb_dask.api.is_zarr(store)              # a directory holding Zarr metadata is
    assert nwb_dask.api.is_zarr(tmp_path / "x.zarr")  # a .zarr name is, existing or not
    assert nwb_dask.api.is_zarr(str(tmp_path / "x.zarr") + "/")
    assert not nwb_dask.api.is_zarr(tmp_path / "x.nwb")
    assert nwb_dask.api.is_zarr("s3://bucket/x.nwb.zarr")
    assert not nwb_dask.api.is_zarr("https://host/x.nwb")


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.filterwarnings("ignore:The file path provided:UserWarning")  # pynwb: no .nwb suffix
@pytest.mark.parametrize("name, zarr_metadata, refusal", [
    ("plain", False, IsADirectoryError),          # not a store: the HDF5 path refuses a directory
    ("notes.zarr", False, FileExistsError),       # a .zarr name: write_nwb_zarr's overwrite=False
    ("store", True, FileExistsError),             # Zarr metadata inside: the same
])
def test_write_nwb_never_destroys_an_existing_directory(tmp_path, name, zarr_metadata, refusal):
    """An existing directory is refused, whichever way is_zarr sends it, and left as it was."""
    folder = tmp_path / name
    (folder / "deep").mkdir(parents=True)
    (folder / "keep.txt").write_text("precious")
    (folder / "deep" / "data.bin").write_bytes(b"\x00\x01")
    if zarr_metadata:
        (folder / ".zgroup").write_text('{"zarr_format": 2}')
    assert nwb_dask.api.is_zarr(folder) is (refusal is FileExistsError)
    before = _tree(folder)
    _, nwbfile = _series()
    with pytest.raises(refusal) as info:
        nwb_dask.write_nwb(nwbfile, folder, progress=False, scheduler="sync")
    assert str(folder) in str(info.value), info.value
    assert _tree(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left beside it


def test_write_nwb_zarr_overwrite_default_refuses(tmp_path):
    store = tmp_path / "s.nwb.zarr"
    values, nwbfile = _series(1)
    nwb_dask.write_nwb(nwbfile, store, progress=False, scheduler="sync")
    before = _tree(store)
    _, again = _series(2)
    with pytest.raises(FileExistsError, match=str(store)):
        nwb_dask.write_nwb(again, store, progress=False, scheduler="sync")
    assert _tree(store) == before
    np.testing.assert_array_equal(nwb_dask.read_dataset(store, "acquisition/ElectricalSeries/data").compute(),
                                  values)
