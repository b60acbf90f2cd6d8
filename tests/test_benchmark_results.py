"""Every benchmark result under benchmarks/results/ is current.

Each JSON carries the ``provenance`` its script wrote (benchmarks/provenance.py, whose docstring
gives the rule and the layout). A result is current when its script, its non-gateware sources
(``SOURCES``) and the data it measured (its ``inputs``: bundles) hash as they did when it ran,
every design it measured generates the same hardware (the RTLIL fingerprints in ``hardware``), and
its keys follow the schema the script declares (``SCHEMA``, ``RESULT_KEYS``). The fingerprints need
regenerating only when the script's ``GATEWARE`` no longer hashes as it did (seconds per design);
while it does, the hardware is the same by construction. A result left behind by a hardware or
script change fails here until the command in its provenance is run again: that is the point.
"""
import functools
import json
import shlex

import pytest

from benchmarks.provenance import (
    PROVENANCE_KEYS, ROOT, file_sha256, hardware_problems, inputs_sha256, key_problems,
    load_script, regenerate, sources_sha256,
)

__all__ = ["load_script"]

RESULTS = ROOT / "benchmarks" / "results"
FILES = sorted(RESULTS.rglob("*.json"))
SCRIPTS = sorted((ROOT / "benchmarks").glob("bench_*.py"))


def read(path):
    return json.loads(path.read_text())


def rerun(prov):
    return f"regenerate it: {shlex.join(prov.get('command') or ['python', prov['script']])}"


def needs_regenerating(prov):
    """Whether the hardware of a result must be regenerated to be checked: its gateware no
    longer hashes as it did (or a fingerprint is unknown)."""
    module = load_script(prov["script"])
    return (prov["gateware_sha256"] != sources_sha256(module.GATEWARE)
            or None in prov["hardware"].values())


@functools.cache
def regenerated():
    """``{path: {label: fingerprint}}`` for every result whose gateware changed, all at once
    on every core (seconds per design; nothing when no gateware changed)."""
    stale = []
    for path in FILES:
        prov = read(path).get("provenance")
        if prov and set(prov) == PROVENANCE_KEYS and needs_regenerating(prov):
            stale.append(path)
    out = {path: {} for path in stale}
    for (p, label), sha in regenerate(stale).items():
        out[type(stale[0])(p)][label] = sha
    return out


def test_results_exist():
    assert FILES, f"no JSON under {RESULTS}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_declares_its_schema(path):
    module = load_script(path.relative_to(ROOT).as_posix())
    assert isinstance(module.SCHEMA, int) and module.SCHEMA >= 1
    for globs in (module.SOURCES, module.GATEWARE):
        assert isinstance(globs, tuple) and all(isinstance(s, str) for s in globs)
    assert module.SOURCES or module.GATEWARE
    assert not set(module.SOURCES) & set(module.GATEWARE)
    assert callable(module.designs)
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
    assert isinstance(prov["hardware"], dict)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_result_is_current(path):
    data = read(path)
    prov = data.get("provenance")
    if prov is None:
        pytest.fail(f"{path.name} has no provenance: regenerate it with its benchmark script")
    assert prov["script_sha256"] == file_sha256(ROOT / prov["script"]), \
        f"{path.name}: {prov['script']} changed since it ran; {rerun(prov)}"
    module = load_script(prov["script"])
    assert prov["sources_sha256"] == sources_sha256(module.SOURCES), \
        f"{path.name}: the sources it measured ({', '.join(module.SOURCES)}) changed; " \
        f"{rerun(prov)}"
    assert prov["inputs"] == (list(module.inputs(data)) if hasattr(module, "inputs") else []), \
        f"{path.name}: its script measures other inputs now; {rerun(prov)}"
    assert prov["inputs_sha256"] == inputs_sha256(prov["inputs"]), \
        f"{path.name}: the data it measured ({', '.join(prov['inputs'])}) changed; " \
        f"{rerun(prov)}"
    if not needs_regenerating(prov):
        return                              # the same gateware: the same hardware
    problems = hardware_problems(data, module, regenerated()[path])
    assert not problems, f"{path.name}: " + "; ".join(problems) + f"; {rerun(prov)}"


def first_per_script():
    """One result per script, and its first design: regenerated on every run, so that a
    script's ``designs`` cannot drift from what it records while the gateware hash holds."""
    seen = {}
    for path in FILES:
        prov = read(path).get("provenance") or {}
        if prov.get("hardware") and prov["script"] not in seen:
            seen[prov["script"]] = path
    return sorted(seen.values())


@pytest.mark.parametrize("path", first_per_script(), ids=lambda p: p.name)
def test_a_design_regenerates(path):
    data = read(path)
    prov = data["provenance"]
    label, make = next(iter(load_script(prov["script"]).designs(data).items()))
    assert prov["hardware"].get(label) == make(), \
        f"{path.name}: {label}: its hardware changed; {rerun(prov)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_design_regenerates(path):
    """Every fingerprint, regenerated whatever the gateware hash says (minutes)."""
    data = read(path)
    prov = data["provenance"]
    problems = hardware_problems(data, load_script(prov["script"]))
    assert not problems, f"{path.name}: " + "; ".join(problems) + f"; {rerun(prov)}"


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
