"""Every ```python block in README.md and docs/*.md runs, page by page, in a temporary directory."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def test_docs_have_examples():
    with_examples = [p.name for p in PAGES if _blocks(p)]
    assert "README.md" in with_examples
    assert len(with_examples) >= 4, with_examples


def test_docs_examples_do_not_need_pytest():
    """The examples run after the README's plain install, which has no pytest (issue 18.6)."""
    importing = re.compile(r"^\s*(import|from)\s+(pytest|_pytest)\b", re.M)
    offenders = [f"{p.name}[block {i}]" for p in PAGES for i, code in enumerate(_blocks(p)) if importing.search(code)]
    assert not offenders, f"docs examples import pytest: {offenders}"


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "pytest", None)  # `import pytest` in an example fails, as without pytest
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(_blocks(page)):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"{page.name}, python block {i} failed: {exc!r}\n{code}") from exc
    assert os.getcwd() == str(tmp_path)
