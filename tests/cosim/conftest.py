"""Fixtures for cosimulating emitted Verilog, and a summary of what the cosimulations proved.

``cosim(bundle, events, samples, ...)`` saves the bundle, emits the top (or takes given
Verilog), runs :func:`verif.runner.cosimulate` and records the result; ``assert_exact(result)``
is the one pass criterion: no mismatch, no timeout, every step checked, spikes compared.

Every run is recorded in :data:`verif.runner.RUNS`; ``tests/conftest.py`` sums them up at the end
of the test session (negative checks, which must fail, are counted apart).
"""
import pytest

from models import bundle as bundle_io
from verif.runner import cosimulate

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
    counter = iter(range(1000))

    def run(bundle, events=None, samples=None, *, sim="icarus", lanes=1, options=None,
            verilog=None, expect_pass=True, **kwargs):
        index = next(counter)
        bdir = bundle_io.save(bundle, tmp_path / f"bundle{index}")
        if verilog is None:
            verilog = emit_top(bundle, lanes=lanes, **(options or {}))
        result = cosimulate(verilog, bdir, sim=sim, events=events, samples=samples,
                            test_dir=tmp_path / f"run{index}", **kwargs)
        result.update({"test": request.node.nodeid, "expect_pass": expect_pass})
        return result

    return run
