"""Cosimulation of the host link's Verilog with the real host driver on a pseudo-terminal.

:func:`cosimulate` emits the Verilog of a :class:`~hdl.link.HostLink` (accelerator, UART and
protocol: everything of the board top but clock and pins), runs it under Icarus through cocotb,
and starts ``python -m boards run --port /dev/pts/N`` against it. The cocotb test in this module
is the UART model between the two: bytes the host writes to the pseudo-terminal are driven onto
``rx`` bit by bit, bits the design sends on ``tx`` are sampled mid-bit and written back. So the
host driver runs the very code path it runs against a board, pyserial included.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

__all__ = ["CosimError", "cosimulate", "emit_verilog"]

REPO = Path(__file__).resolve().parent.parent
TOPLEVEL = "board_link"
PERIOD_NS = 10
ENV = "BOARDS_COSIM"          # JSON settings handed to the cocotb test


class CosimError(RuntimeError):
    """The cosimulation did not complete; carries the host's output and the log tail."""


def emit_verilog(link, name=TOPLEVEL):
    """Verilog of ``link`` from Amaranth's builtin Yosys (reproducible output)."""
    from amaranth.back import verilog
    saved = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        return verilog.convert(link, name=name, emit_src=False)
    finally:
        if saved is None:
            del os.environ["AMARANTH_USE_YOSYS"]
        else:
            os.environ["AMARANTH_USE_YOSYS"] = saved


def _tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cosimulate(link, bundle_dir, folder, *, samples=None, host_timeout=120.0,
               wall_limit=600.0):
    """Run the host driver against ``link``'s Verilog under Icarus; return its results.

    ``link`` must have been built for the bundle in ``bundle_dir`` (with vectors). Returns the
    host's ``--json`` results plus ``returncode`` and ``output`` (what the host printed).
    """
    from cocotb_tools.runner import get_runner
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{TOPLEVEL}.v"
    source.write_text(emit_verilog(link))
    runner = get_runner("icarus")
    build_log = folder / "build.log"
    try:
        runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=folder / "sim",
                     always=True, timescale=("1ns", "1ps"),
                     build_args=["-g2005"],          # amaranth-lang/amaranth#1629
                     log_file=build_log)
    except (RuntimeError, OSError, SystemExit) as exc:
        raise CosimError(f"Icarus build failed ({exc!r}):\n{_tail(build_log)}") from None
    results = folder / "results.json"
    results.unlink(missing_ok=True)
    host_args = ["--bundle", str(Path(bundle_dir).resolve()), "--json", str(results),
                 "--timeout", str(host_timeout), "--baud", "1000000"]
    if samples is not None:
        host_args += ["--samples", str(samples)]
    settings = {"divisor": link.divisor, "host_args": host_args,
                "output": str(folder / "host.log"), "wall_limit": wall_limit,
                "returncode": str(folder / "host.rc"), "timeline": str(folder / "timeline.json")}
    sim_log = folder / "sim.log"
    failed = None
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    try:
        runner.test(test_module="boards.cosim", hdl_toplevel=TOPLEVEL,
                    hdl_toplevel_lang="verilog", build_dir=folder / "sim", test_dir=folder,
                    extra_env={ENV: json.dumps(settings), "PYTHONPATH": pythonpath},
                    results_xml=str(folder / "results.xml"), log_file=sim_log)
    except (RuntimeError, OSError, SystemExit) as exc:   # cocotb_tools exits on a failed test
        failed = exc
    output = Path(settings["output"]).read_text() if Path(settings["output"]).exists() else ""
    rc_path = Path(settings["returncode"])
    if not rc_path.exists():
        raise CosimError(f"The host driver did not finish ({failed!r}); host output:\n{output}"
                         f"\nsimulation log:\n{_tail(sim_log)}")
    result = json.loads(results.read_text()) if results.exists() else {}
    result.update({"returncode": int(rc_path.read_text()), "output": output})
    result.update(_end_to_end(Path(settings["timeline"]), link.info.clock_hz,
                              len(result.get("samples") or [])))
    return result


def _end_to_end(timeline, clock_hz, samples):
    """The run's span in simulated cycles, from the first byte the host sent after the board's
    first reply (INFO) to the last byte of the last reply, and the inferences per second that
    makes at the board's clock: the host link's end-to-end rate, UART at its baud included."""
    if not timeline.exists() or not samples:
        return {}
    t = json.loads(timeline.read_text())
    first_reply = t["tx"][0] if t["tx"] else None
    rx = [x for x in t["rx"] if first_reply is not None and x > first_reply]
    if not rx or not t["tx"]:
        return {}
    cycles = (t["tx"][-1] - rx[0]) / PERIOD_NS
    return {"end_to_end_cycles": cycles,
            "end_to_end_bytes": len(rx) + sum(1 for x in t["tx"] if x > rx[0]),
            "inferences_per_second_end_to_end": samples * clock_hz / cycles}


# The cocotb side: imported by the simulator's Python, never by the host driver.
try:
    import cocotb
except ImportError:                                        # pragma: no cover
    cocotb = None

if cocotb is not None:
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, FallingEdge, Timer

    @cocotb.test()
    async def host_driver_through_uart(dut):
        """Bridge a pseudo-terminal to the design's UART while ``python -m boards run`` runs."""
        import fcntl
        import pty
        import subprocess
        import tty

        settings = json.loads(os.environ[ENV])
        bit_ps = settings["divisor"] * PERIOD_NS * 1000
        Clock(dut.clk, PERIOD_NS, unit="ns").start()
        dut.rx.value = 1
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        # Drive rx half a clock period off the rising edges, so no write races a sample.
        await Timer(PERIOD_NS * 500, unit="ps")

        master, slave = pty.openpty()
        tty.setraw(slave)
        fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
        port = os.ttyname(slave)
        out = open(settings["output"], "w")
        proc = subprocess.Popen([sys.executable, "-m", "boards", "run", "--port", port,
                                 *settings["host_args"]],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        from cocotb.utils import get_sim_time
        sent = bytearray()
        timeline = {"rx": [], "tx": []}          # simulated ns: host byte starts, board byte ends

        async def board_to_host():
            while True:
                await FallingEdge(dut.tx)
                await Timer(bit_ps // 2, unit="ps")
                if dut.tx.value != 0:
                    continue                                # a glitch, not a start bit
                value = 0
                for k in range(8):
                    await Timer(bit_ps, unit="ps")
                    value |= int(dut.tx.value) << k
                await Timer(bit_ps, unit="ps")
                assert dut.tx.value == 1, "board sent a byte without a stop bit"
                sent.append(value)
                timeline["tx"].append(get_sim_time(unit="ns"))
                os.write(master, bytes([value]))

        cocotb.start_soon(board_to_host())
        start = time.monotonic()
        idle = 0
        try:
            while proc.poll() is None:
                if time.monotonic() - start > settings["wall_limit"]:
                    raise TimeoutError(f"host driver still running after "
                                       f"{settings['wall_limit']} s")
                try:
                    data = os.read(master, 4096)
                except (BlockingIOError, OSError):
                    data = b""
                for byte in data:
                    timeline["rx"].append(get_sim_time(unit="ns"))
                    for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
                        dut.rx.value = bit
                        await Timer(bit_ps, unit="ps")
                if data:
                    idle = 0
                    continue
                # Nothing from the host: let simulated time pass, and give the host the CPU
                # while the design is idle too.
                idle += 1
                await Timer(20 * bit_ps, unit="ps")
                if idle > 50 and not int(dut.busy.value) and int(dut.tx.value):
                    time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            out.close()
            os.close(master)
            os.close(slave)
        Path(settings["timeline"]).write_text(json.dumps(timeline))
        Path(settings["returncode"]).write_text(f"{proc.returncode}\n")
        dut._log.info(f"host driver exited with {proc.returncode}; board sent {len(sent)} bytes")
