"""Fixtures for cosimulating emitted Verilog, and a summary of what the cosimulations proved.

``cosim(bundle, events, samples, ...)`` saves the bundle, emits the top (or takes given
Verilog), runs :func:`verif.runner.cosimulate` and records the result; ``assert_exact(result)``
is the one pass criterion: no mismatch, no timeout, every step checked, spikes compared.

At the end of the run the terminal summary lists the cosimulations per simulator, the spikes
compared and the mismatches (negative checks, which must fail, are counted apart).
"""
import pytest

from models import bundle as bundle_io
from verif.runner import cosimulate

_RUNS = pytest.StashKey[list]()


def emit_top(bundle, *, lanes=1, name="snn_top", **options):
    """Verilog of the generated top for ``bundle``, exactly as :func:`gen.emit_verilog` emits it."""
    from gen import emit_verilog
    out = emit_verilog(bundle, lanes=lanes, name=name, **options)
    # gen.emit_verilog returns (top, verilog); accept a bare string as well.
    return out[1] if isinstance(out, tuple) else out


def assert_exact(result):
    """The hardware equals the golden model on every step, and something was compared."""
    where = f"(log {result.get('log')})"
    assert not result["timeout"], f"{result['error']} {where}"
    assert result["error"] is None, f"{result['error']} {where}"
    assert result["mismatches"] == 0, (
        f"{result['mismatches']} mismatches; first: {result['first_mismatch']} {where}")
    assert result["steps_checked"] == result["steps"] > 0
    assert result["pending_inputs"] == 0
    assert result["spikes_compared"] > 0, "no spikes compared: the case proves nothing"
    assert result["passed"]


@pytest.fixture
def cosim(request, tmp_path):
    runs = request.config.stash.setdefault(_RUNS, [])
    counter = iter(range(1000))

    def run(bundle, events=None, samples=None, *, sim="icarus", lanes=1, options=None,
            verilog=None, expect_pass=True, **kwargs):
        index = next(counter)
        bdir = bundle_io.save(bundle, tmp_path / f"bundle{index}")
        if verilog is None:
            verilog = emit_top(bundle, lanes=lanes, **(options or {}))
        result = cosimulate(verilog, bdir, sim=sim, events=events, samples=samples,
                            test_dir=tmp_path / f"run{index}", **kwargs)
        runs.append({"test": request.node.nodeid, "sim": sim, "expect_pass": expect_pass,
                     "spikes": result["spikes_compared"], "mismatches": result["mismatches"],
                     "passed": result["passed"]})
        return result

    return run


def pytest_terminal_summary(terminalreporter, config):
    runs = config.stash.get(_RUNS, [])
    if not runs:
        return
    tr = terminalreporter
    tr.section("cosimulation")
    proofs = [r for r in runs if r["expect_pass"]]
    negatives = [r for r in runs if not r["expect_pass"]]
    for sim in sorted({r["sim"] for r in runs}):
        mine = [r for r in proofs if r["sim"] == sim]
        tests = len({r["test"] for r in mine})
        tr.write_line(f"{sim}: {tests} tests, {len(mine)} runs, "
                      f"{sum(r['spikes'] for r in mine)} spikes compared, "
                      f"{sum(r['mismatches'] for r in mine)} mismatches, "
                      f"{sum(not r['passed'] for r in mine)} failed runs")
    tr.write_line(f"total: {len(proofs)} runs, {sum(r['spikes'] for r in proofs)} spikes "
                  f"compared, {sum(r['mismatches'] for r in proofs)} mismatches")
    if negatives:
        caught = sum(not r["passed"] for r in negatives)
        tr.write_line(f"negative checks (broken designs that must fail): {caught} of "
                      f"{len(negatives)} caught")
