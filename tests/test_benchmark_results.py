"""Every benchmark result under benchmarks/results/ is current.

Each JSON carries the ``provenance`` its script wrote (benchmarks/provenance.py): the script's
hash, a hash of the sources it measured, the command and the layout's version. A result is
current when the script and the sources hash as they did when it ran, and its keys follow the
schema the script declares (``SCHEMA``, ``RESULT_KEYS``). A result left behind by a hardware or
script change fails here until the command in its provenance is run again: that is the point.
"""
import functools
import importlib.util
import json
import shlex

import pytest

from benchmarks.provenance import (
    PROVENANCE_KEYS, ROOT, file_sha256, key_problems, sources_sha256,
)

RESULTS = ROOT / "benchmarks" / "results"
FILES = sorted(RESULTS.rglob("*.json"))
SCRIPTS = sorted((ROOT / "benchmarks").glob("bench_*.py"))


@functools.cache
def load_script(rel):
    """The benchmark script at ``rel`` (repository-relative), imported without running it."""
    path = ROOT / rel
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path):
    return json.loads(path.read_text())


def rerun(prov):
    return f"regenerate it: {shlex.join(prov.get('command') or ['python', prov['script']])}"


def test_results_exist():
    assert FILES, f"no JSON under {RESULTS}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_declares_its_schema(path):
    module = load_script(path.relative_to(ROOT).as_posix())
    assert isinstance(module.SCHEMA, int) and module.SCHEMA >= 1
    assert module.SOURCES and all(isinstance(s, str) for s in module.SOURCES)
    assert module.RESULT_KEYS[""] >= {"provenance"}
    assert module.RESULT_KEYS["provenance"] == PROVENANCE_KEYS


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_result_has_provenance(path):
    data = read(path)
    assert isinstance(data, dict) and "provenance" in data, \
        f"{path.name} has no provenance: regenerate it with its benchmark script"
    prov = data["provenance"]
    assert set(prov) == PROVENANCE_KEYS, sorted(set(prov) ^ PROVENANCE_KEYS)
    assert (ROOT / prov["script"]).is_file(), f"{prov['script']} does not exist"
    assert prov["command"][:2] == ["python", prov["script"]]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_result_is_current(path):
    prov = read(path).get("provenance")
    if prov is None:
        pytest.fail(f"{path.name} has no provenance: regenerate it with its benchmark script")
    assert prov["script_sha256"] == file_sha256(ROOT / prov["script"]), \
        f"{path.name}: {prov['script']} changed since it ran; {rerun(prov)}"
    sources = load_script(prov["script"]).SOURCES
    assert prov["hdl_sha256"] == sources_sha256(sources), \
        f"{path.name}: the sources it measured ({', '.join(sources)}) changed; {rerun(prov)}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_result_follows_its_schema(path):
    data = read(path)
    prov = data.get("provenance") if isinstance(data, dict) else None
    if prov is None:
        pytest.fail(f"{path.name} has no provenance: regenerate it with its benchmark script")
    module = load_script(prov["script"])
    assert prov["schema"] == module.SCHEMA, \
        f"{path.name}: layout version {prov['schema']}, the script writes {module.SCHEMA}; " \
        f"{rerun(prov)}"
    assert key_problems(data, module.RESULT_KEYS) == []
