# amaranth: UnusedElaboratable=no
"""hdl.rate.RateEncoder as Verilog, under Icarus and Verilator, against models/onboard.py: every
output event in order, with random input gaps and output stalls (tests/cosim/rate_bench.py)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from hdl.event import addr_bits
from hdl.rate import RateEncoder
from models import onboard
from tests.hdl.test_rate import expected_stream, intensities, link_passes
from verif.runner import _prepare_env, build

REPO = Path(__file__).resolve().parents[2]


# Icarus in the default run; Verilator (a 30 s build each) and the other pairing in the slow
# set, which keeps the default run within its budget.
@pytest.mark.parametrize("sim, n_in, bits", [
    ("icarus", 100, 4),
    pytest.param("verilator", 45, 7, marks=[pytest.mark.verilator, pytest.mark.slow]),
    pytest.param("icarus", 45, 7, marks=pytest.mark.slow),
    pytest.param("verilator", 100, 4, marks=[pytest.mark.verilator, pytest.mark.slow]),
])
def test_encoder_verilog_draws_the_reference_spikes(tmp_path, sim, n_in, bits):
    samples, steps = 3, 4
    q = intensities(np.random.default_rng(n_in), samples, n_in, bits)
    seeds = onboard.sample_seeds(n_in * bits, samples)
    passes = link_passes(q, seeds, n_in=n_in, bits=bits, steps=steps)
    want = expected_stream(q, seeds, steps=steps, bits=bits)
    text = verilog.convert(RateEncoder(n_in, bits), name="rate_encoder", emit_src=False)
    folder = build(text, sim=sim, toplevel="rate_encoder", root=tmp_path / "build")
    from cocotb_tools.runner import get_runner
    _prepare_env(sim)
    cfg = {"addr_bits": addr_bits(n_in), "bits": bits, "seed": n_in, "gap": 0.3, "stall": 0.4,
           "events": [list(e) for p in passes for e in p], "expected": [list(e) for e in want],
           "budget": 40 * samples * steps * n_in}
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    try:
        xml = get_runner(sim).test(
            test_module="tests.cosim.rate_bench", hdl_toplevel="rate_encoder",
            hdl_toplevel_lang="verilog", build_dir=folder, test_dir=tmp_path,
            results_xml=str(tmp_path / "results.xml"), log_file=tmp_path / "sim.log",
            extra_env={"RATE_BENCH": json.dumps(cfg), "PYTHONPATH": pythonpath})
    except SystemExit:                                   # cocotb_tools exits on a failure
        xml = tmp_path / "results.xml"
    report = Path(xml).read_text()
    assert "encoder_against_reference" in report and "<failure" not in report, \
        (tmp_path / "sim.log").read_text()[-3000:]
    assert sum(e[1] for e in want) > 0
