"""setup.py promises Python >= 3.9 (python_requires): every source file of the package, the tests and
the scripts must parse as Python 3.9 and call nothing 3.10 added to the language's builtins. (The demo
needs Gradio 6, i.e. Python >= 3.10: the `demo` extra and the test extra's gradio / playwright carry
that marker, and tests/test_demo.py skips without gradio.) vermin (pip) confirms it in full:
`vermin -t=3.9- --violations --eval-annotations keep tests scripts setup.py`."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("keep", "tests", "scripts") for p in (REPO / folder).rglob("*.py")) + [REPO / "setup.py"]


def _too_new(tree: ast.AST) -> list:
    """Calls that only Python >= 3.10 accepts: zip(strict=...); int.bit_count, itertools.pairwise, aiter/anext."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name == "zip" and any(k.arg == "strict" for k in node.keywords):
                found.append(f"line {node.lineno}: zip(strict=)")
            if name in ("pairwise", "bit_count", "aiter", "anext"):
                found.append(f"line {node.lineno}: {name}()")
    return found


def test_setup_py_states_what_the_sources_need():
    text = (REPO / "setup.py").read_text()
    assert re.search(r'python_requires=">=3\.9"', text)
    for extra in ("gradio", "playwright"):     # the >= 3.10 parts say so
        assert all("python_version>='3.10'" in line for line in re.findall(rf'"{extra}[^"]*"', text)), extra


def test_every_source_is_python_3_9():
    assert len(SOURCES) > 100
    problems = {}
    for path in SOURCES:
        source = path.read_text()
        try:
            tree = ast.parse(source, filename=str(path), feature_version=(3, 9))   # match, except*, ...
        except SyntaxError as err:
            problems[str(path.relative_to(REPO))] = [f"line {err.lineno}: {err.msg}"]
            continue
        bad = _too_new(tree)
        if bad:
            problems[str(path.relative_to(REPO))] = bad
    assert not problems, problems
