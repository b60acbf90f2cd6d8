"""The simulator flags docs/verification.md gives users work: its command lines, run verbatim.

The section "Simulate the Verilog in your own testbench" holds two ``sh`` blocks: the first emits
a small design with ``python -m gen`` and compiles and runs it with Icarus, the second builds
and runs it with Verilator. The test runs every line of them as written (``python`` is this
interpreter) in a scratch folder, with :data:`TESTBENCH` as the user's bench ``tb.v``: plain
Verilog-2005 that resets the design, streams the bundle's test vectors in under random input
gaps and output stalls, stops on X, and prints each output event. The events printed must be
the golden model's, one for one.

cocotb's Python runner with the documented settings is what ``verif.runner`` runs in every
cosimulation of tests/cosim, so it is not repeated here.
"""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth import Const, signed, unsigned

from hdl.event import EventLayout, SpikeLayout
from models import bundle as bundle_io
from models import golden
from verif.runner import command_env

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "verification.md"
SECTION = "## Simulate the Verilog in your own testbench"

#: The user's bench, Verilog-2005. ``@NAME@`` are filled in from the design and its vectors.
#: Inputs are set in an ``initial`` block, a common style that (amaranth-lang/amaranth#1629)
#: leaves the design dead under ``iverilog -g2012``.
TESTBENCH = """\
`timescale 1ns/1ps
module tb;
  parameter IW = @IW@, OW = @OW@, N_IN = @N_IN@, N_OUT = @N_OUT@, TIMEOUT = @TIMEOUT@;
  reg clk, rst, i__valid, o__ready;
  reg [IW-1:0] i__payload;
  wire i__ready, o__valid;
  wire [OW-1:0] o__payload;
  reg [IW-1:0] events [0:N_IN-1];
  integer sent, received, cycles, seed;

  snn_top dut (.clk(clk), .rst(rst), .i__payload(i__payload), .i__valid(i__valid),
               .i__ready(i__ready), .o__payload(o__payload), .o__valid(o__valid),
               .o__ready(o__ready));

  always #5 clk = ~clk;

  initial begin
    $readmemh("events.hex", events);
    clk = 0; rst = 1; i__valid = 0; i__payload = 0; o__ready = 0;
    sent = 0; received = 0; cycles = 0; seed = 1;
    repeat (4) @(posedge clk);
    rst <= 0;
  end

  // Everything is sampled at the rising edge, as the design sees it.
  always @(posedge clk) if (!rst) begin
    cycles = cycles + 1;
    if (^{i__ready, o__valid} === 1'bx || (o__valid && ^o__payload === 1'bx)) begin
      $display("ERROR: X on an output at cycle %0d", cycles);
      $finish;
    end
    if (i__valid && i__ready)
      sent = sent + 1;
    if (o__valid && o__ready) begin
      $display("OUT %h", o__payload);
      received = received + 1;
    end
    if (!i__valid || i__ready) begin                 // nothing pending: next event, or a gap
      i__valid <= sent < N_IN && ($random(seed) & 3) != 0;
      i__payload <= events[sent < N_IN ? sent : 0];
    end
    o__ready <= ($random(seed) & 3) != 0;            // not ready one cycle in four
    if (received == N_OUT) begin
      $display("DONE after %0d cycles, %0d events in, %0d out", cycles, sent, received);
      $finish;
    end
    if (cycles == TIMEOUT) begin
      $display("ERROR: timeout after %0d cycles, %0d events in, %0d out", cycles, sent,
               received);
      $finish;
    end
  end
endmodule
"""


def doc_blocks():
    """The ``sh`` blocks of the section, as lists of commands (``\\`` continuations joined)."""
    text = DOC.read_text()
    assert SECTION in text, f"{DOC} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    return [[line.strip() for line in block.replace("\\\n", " ").splitlines()
             if line.strip() and not line.lstrip().startswith("#")] for block in blocks]


def _pack(layout, fields):
    return Const.cast(layout.const(fields)).value


def _write_bench(folder, design):
    """``tb.v`` and ``events.hex`` for the design in ``design``; the expected output events."""
    bundle = bundle_io.load(design / "bundle")
    report_ports = json.loads((design / "report.json").read_text())["ports"]
    v = bundle.vectors
    spec = bundle.input
    in_layout = EventLayout(spec.size, (signed if spec.signed else unsigned)(spec.bits))
    out_layout = SpikeLayout(bundle.n_out)
    assert (in_layout.size, out_layout.size) == (report_ports["i__payload"],
                                                 report_ports["o__payload"])
    stream_in = golden.input_stream(v.events, v.samples, v.steps)
    trace = golden.run(bundle, golden.events_to_dense(v.events, v.samples, v.steps, spec.size))
    assert np.array_equal(golden.spike_rows(trace.output), v.spikes)
    stream_out = golden.output_stream(trace.output)
    assert any(spike for _, spike, _ in stream_out), "the vectors make no spike: a weak check"
    (folder / "events.hex").write_text("".join(
        f"{_pack(in_layout, dict(addr=a, value=x, last=last, first=first)):x}\n"
        for a, x, last, first in stream_in))
    bench = TESTBENCH
    for name, value in {"IW": in_layout.size, "OW": out_layout.size, "N_IN": len(stream_in),
                        "N_OUT": len(stream_out),
                        "TIMEOUT": 100 * len(stream_in) + 10_000}.items():
        bench = bench.replace(f"@{name}@", str(value))
    (folder / "tb.v").write_text(bench)
    return [_pack(out_layout, dict(addr=a, spike=spike, last=last))
            for a, spike, last in stream_out]


def _run(command, cwd):
    """Run one documented command line; ``python`` is this interpreter, the rest goes to bash."""
    if command.startswith("python "):
        argv = [sys.executable, *shlex.split(command, comments=True)[1:]]
        return subprocess.run(argv, cwd=cwd, env=command_env(), capture_output=True, text=True,
                              timeout=300)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=command_env(), capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    """The section's first command (``python -m gen``) run, and the bench written beside it."""
    blocks = doc_blocks()
    assert len(blocks) == 2, "expected an Icarus block and a Verilator block"
    first = blocks[0][0]
    assert first.startswith("python -m gen "), first
    folder = tmp_path_factory.mktemp("user_bench")
    proc = _run(first, folder)
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(first, comments=True)
    out = Path(argv[argv.index("-o") + 1])
    expected = _write_bench(folder, folder / out)
    return folder, blocks, expected


def _check_simulation(commands, folder, expected):
    """Run ``commands`` in order; exactly one prints the bench's output, which must be golden."""
    runs = []
    for command in commands:
        proc = _run(command, folder)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if "DONE after" in proc.stdout or "ERROR" in proc.stdout:
            runs.append((command, proc.stdout))
    assert len(runs) == 1, f"expected one simulation run among {commands}"
    command, stdout = runs[0]
    assert "ERROR" not in stdout, f"{command}: {stdout[-2000:]}"
    got = [int(m, 16) for m in re.findall(r"^OUT ([0-9a-fA-F]+)$", stdout, re.MULTILINE)]
    assert got == expected, f"{command}: output events differ from the golden model"


def test_icarus_command_line(design):
    folder, blocks, expected = design
    commands = blocks[0][1:]
    assert any(c.startswith("iverilog ") and "-g2005" in c.split() for c in commands)
    _check_simulation(commands, folder, expected)


@pytest.mark.verilator
def test_verilator_command_line(design):
    folder, blocks, expected = design
    commands = blocks[1]
    build = next(c for c in commands if " verilator " in f" {c} ")
    for flag in ("-Wno-fatal", "--timescale 1ns/1ps", "CFG_CXXFLAGS_PCH_I=-include"):
        assert flag in build, f"the documented Verilator build lacks {flag}"
    _check_simulation(commands, folder, expected)
