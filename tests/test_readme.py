"""The README is executable: every ``python -m`` line of its fenced code blocks runs here.

Each line runs as written, ``python`` being this interpreter, in a scratch folder that holds a
copy of ``models/zoo`` at the same relative path (and ``PYTHONPATH`` = the repository), so the
outputs (``build/``, ``runs/``) land in ``tmp_path`` and nothing in the checkout changes, except
the shared cosimulation build cache (``build/cosim``, see ``verif.runner.build_root``).

A line that is in none of :data:`FAST`, :data:`SLOW` and :data:`EXCEPTED` runs as written in the
default run; those three say, line by line and with a reason, what runs instead. An entry whose
line is no longer in the README fails :func:`test_every_readme_command_is_accounted_for`, so the
README and this file change together. ``python benchmarks/...`` lines are not ``python -m``
lines: each script must exist and answer ``--help``.

=====================================================  =====================================
README line                                            default run (with ``-m slow``)
=====================================================  =====================================
``python -m models train --arch mlp -o runs/mlp.pt``   ``--epochs 1 --prune-epochs 1`` added
``python -m verif --bundle ... --sim verilator ...``   ``--samples 8`` added
                                                       (as written)
``python -m boards build --board icebreaker ...``      not run (as written)
``python -m boards fit --board icebreaker ...``        not run (as written)
``python -m boards build --board ulx3s ... --program`` never: needs a ULX3S on USB
``python -m boards run --port /dev/ttyUSB1 ...``       never: needs a programmed board
every other ``python -m`` line                         as written
=====================================================  =====================================
"""
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from verif.runner import command_env

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: README line -> (what the default run runs instead, why). Only these substitutions exist.
FAST = {
    "python -m models train --arch mlp -o runs/mlp.pt": (
        "python -m models train --arch mlp -o runs/mlp.pt --epochs 1 --prune-epochs 1",
        "20 dense + 10 pruning epochs take ~16 s on 2 cores; one of each writes the same "
        "checkpoint that the export line reads"),
    "python -m verif --bundle models/zoo/digits_mlp --sim verilator --lanes 4": (
        "python -m verif --bundle models/zoo/digits_mlp --sim verilator --lanes 4 "
        "--samples 8",
        "all 360 samples take ~40 s of simulation after a ~20-30 s Verilator build; the first "
        "8 of the bundle's vectors take ~1 s on the same design and simulator"),
}

#: README line -> (test id, why): run as written, only with ``-m slow``.
SLOW = {
    "python -m boards build --board icebreaker --bundle models/zoo/digits_mlp": (
        "icebreaker-build",
        "place and route with a clock search, ~80 s (plus ~3 min of YoWASP compile on a fresh "
        "machine)"),
    "python -m verif --bundle models/zoo/digits_mlp --sim verilator --lanes 4": (
        "verif-verilator", "~70 s (Verilator build ~30 s, 360 samples ~40 s)"),
    "python -m boards fit --board icebreaker --bundle models/zoo/digits_mlp --lanes 2,1": (
        "icebreaker-fit",
        "Yosys synthesis of the digits MLP, ~25 s of CPU (60 s wall on 2 shared cores); the "
        "default run synthesises a small layer through the same CLI in "
        "tests/boards/test_fit.py"),
    "python -m boards fit --board icebreaker --bundle models/zoo/digits_mlp --rate 4": (
        "icebreaker-fit-rate",
        "Yosys synthesis of the digits MLP with the rate encoder, ~30 s of CPU; the default "
        "run cosimulates that design through the host driver in tests/boards/test_rate.py"),
}

#: README line -> why it never runs here.
EXCEPTED = {
    "python -m boards build --board ulx3s --bundle models/zoo/digits_mlp --program":
        "programs a ULX3S over USB; the ULX3S build itself is "
        "tests/boards/test_build.py::test_ulx3s_build_end_to_end (slow)",
    "python -m boards run --port /dev/ttyUSB1 --bundle models/zoo/digits_mlp":
        "talks to a programmed board on a serial port",
}

#: README line -> files (relative to the scratch folder) it must write. Removed before the run.
OUTPUTS = {
    "python -m gen --neurons 64 --sparsity 0.75 -o build/snn_64":
        ["build/snn_64/snn_top.v", "build/snn_64/report.json"],
    "python -m gen --neurons 64 --sparsity 0.75":
        ["build/snn_top.v", "build/report.json", "build/bundle/vectors.npz"],
    "python -m gen --bundle models/zoo/digits_mlp --lanes 4 -o build/mlp":
        ["build/mlp/snn_top.v", "build/mlp/report.json"],
    "python -m gen --bundle models/zoo/digits_csnn -o build/csnn":
        ["build/csnn/snn_top.v", "build/csnn/report.json"],
    "python -m models train --arch mlp -o runs/mlp.pt": ["runs/mlp.pt", "runs/mlp.json"],
    "python -m models train --dataset mnist --train-samples 512 --steps 4 --epochs 1 "
    "--prune-epochs 1 -o runs/mnist.pt": ["runs/mnist.pt", "runs/mnist.json"],
    "python -m models export runs/mlp.pt -o build/mlp_bundle":
        ["build/mlp_bundle/bundle.json", "build/mlp_bundle/vectors.npz"],
    "python -m boards build --board icebreaker --bundle models/zoo/digits_mlp":
        ["build/board/snn_board.bin", "build/board/report.json"],
}


def readme_blocks(text=None):
    """Fenced code blocks of the README: ``(heading, [lines])``, continuations joined."""
    return [(heading, lines) for heading, _, lines in _blocks(text)]


def _blocks(text=None):
    """``(heading, language, [lines])`` of each fenced code block."""
    text = README.read_text() if text is None else text
    blocks, heading = [], ""
    fence = None
    for line in text.splitlines():
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.startswith("```"):
                fence, language, lines = line[:3], line[3:].strip(), []
        elif line.startswith(fence):
            blocks.append((heading, language,
                           "\n".join(lines).replace("\\\n", " ").splitlines()))
            fence = None
        else:
            lines.append(line)
    return blocks


def normalise(line):
    """A command line without its comment, in one canonical spelling."""
    return shlex.join(shlex.split(line, comments=True))


def readme_commands(prefix="python -m "):
    """``(id, block, command)`` for each code-block line starting with ``prefix``, in order.

    ``id`` is the heading above the block and the line's number under that heading; ``block``
    numbers the code blocks.
    """
    commands, count = [], {}
    for block, (heading, lines) in enumerate(readme_blocks()):
        slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or "top"
        for line in lines:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            command = normalise(line)
            if command.startswith(prefix):
                count[slug] = count.get(slug, 0) + 1
                commands.append((f"{slug}-{count[slug]}", block, command))
    return commands


def scratch(folder):
    """A folder to run README lines in: the repository's models/zoo at models/zoo."""
    shutil.copytree(REPO / "models" / "zoo", folder / "models" / "zoo")
    return folder


def run_command(command, folder, *, readme_line=None, timeout=600):
    """Run ``command`` (``python`` = this interpreter) in ``folder``; check it and its outputs."""
    readme_line = readme_line or command
    argv = shlex.split(command)
    assert argv[0] == "python", command
    outputs = [folder / path for path in OUTPUTS.get(readme_line, [])]
    for path in outputs:
        path.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=folder, env=command_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{command}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-3000:]}")
    missing = [str(path.relative_to(folder)) for path in outputs if not path.is_file()]
    assert not missing, f"{command} did not write {missing}"
    if "--help" in argv:
        assert proc.stdout.startswith("usage:"), proc.stdout[:200]
    return proc


# -- accounting ---------------------------------------------------------------------------------

def test_every_readme_command_is_accounted_for():
    commands = [command for _, _, command in readme_commands()]
    assert commands, "no python -m lines found in the README"
    assert len(commands) == len(set(commands)), "a README line appears twice"
    for table in (FAST, SLOW, EXCEPTED, OUTPUTS):
        stale = [line for line in table if line not in commands]
        assert not stale, f"listed here but no longer in the README: {stale}"
    assert not set(EXCEPTED) & (set(FAST) | set(SLOW))
    for line, (variant, _) in FAST.items():
        assert variant.startswith(line), f"a fast variant only appends options: {variant}"
    # In shell blocks every python -m starts its line (no `cd x && python -m ...` hiding).
    for _, language, lines in _blocks():
        if language not in ("sh", "bash", "shell", "console"):
            continue
        for line in lines:
            code = line.split(" #", 1)[0]
            if "python -m " in code:
                assert code.lstrip().startswith("python -m "), line


def test_readme_block_parsing():
    text = "# A\n```sh\npython -m gen \\\n  --help   # two lines\nmake build\n```\n"
    [(heading, (first, second))] = readme_blocks(text)
    assert (heading, normalise(first), second) == ("A", "python -m gen --help", "make build")


# -- the default run: each line as written, or its listed fast variant --------------------------

DEFAULT = [(name, block, command) for name, block, command in readme_commands()
           if command not in EXCEPTED and (command in FAST or command not in SLOW)]


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory):
    """One scratch folder for the default run; the README lines that passed and failed in it."""
    return scratch(tmp_path_factory.mktemp("readme")), set(), set()


@pytest.mark.parametrize("block, command", [(b, c) for _, b, c in DEFAULT],
                         ids=[name for name, _, _ in DEFAULT])
def test_readme_command(block, command, readme_folder):
    folder, passed, failed = readme_folder

    def run(line):
        try:
            proc = run_command(FAST.get(line, (line,))[0], folder, readme_line=line)
        except AssertionError:
            failed.add(line)
            raise
        passed.add(line)
        return proc

    # Lines of one block may build on each other (export reads what train wrote): run the
    # block's earlier lines first when this one was selected alone.
    for _, earlier_block, earlier in DEFAULT[:[c for _, _, c in DEFAULT].index(command)]:
        if earlier_block == block and earlier not in passed:
            if earlier in failed:
                pytest.skip(f"an earlier line of its block failed: {earlier}")
            run(earlier)
    proc = run(command)
    if command.startswith("python -m verif "):
        assert "PASS: bit-exact" in proc.stdout, proc.stdout
        assert "no spikes were compared" not in proc.stderr


# -- the slow run: the lines that take minutes, as written ----------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("command", list(SLOW), ids=[name for name, _ in SLOW.values()])
def test_readme_slow_command(command, tmp_path):
    folder = scratch(tmp_path)
    proc = run_command(command, folder, timeout=1800)
    if command.startswith("python -m verif "):
        assert "PASS: bit-exact" in proc.stdout, proc.stdout
    if command.startswith("python -m boards build "):
        report = json.loads((folder / "build" / "board" / "report.json").read_text())
        assert report["timing_met"], report


# -- python benchmarks/...: not python -m lines; the scripts exist and parse their options ----

BENCHMARKS = [command for _, _, command in readme_commands("python benchmarks/")]


def test_readme_lists_benchmarks():
    assert BENCHMARKS


@pytest.mark.parametrize("command", BENCHMARKS, ids=[c.split("/")[-1] for c in BENCHMARKS])
def test_readme_benchmark_help(command):
    script = REPO / shlex.split(command)[1]
    assert script.is_file(), f"{command}: no {script}"
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, env=command_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr[-2000:]
