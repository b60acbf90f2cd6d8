"""Zoo networks through NIR and back, through the command lines, generated and cosimulated.

``python -m models nir-export`` writes a zoo bundle as a NIR graph, ``python -m models
nir-import --exact`` reads it back with the zoo's input events, ``python -m gen --bundle``
emits the accelerator, and the emitted Verilog runs under Icarus against the golden model of
the imported bundle, with random input gaps and output stalls.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from models import bundle as bundle_io
from tests.cosim.conftest import assert_exact

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "models" / "zoo"


def python_m(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={"PYTHONPATH": str(REPO),
                                                       "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, f"python -m {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.parametrize("name, lanes, samples", [
    ("digits_mlp", 4, 3),
    pytest.param("digits_csnn", 4, 4, marks=pytest.mark.slow),
    pytest.param("digits_mlp_lapicque", 2, 8, marks=pytest.mark.slow),
    pytest.param("digits_csnn_lapicque", 2, 4, marks=pytest.mark.slow)])
def test_zoo_through_nir_cosimulates(cosim, tmp_path, name, lanes, samples):
    python_m("models", "nir-export", str(ZOO / name), "-o", "graph.nir", cwd=tmp_path)
    python_m("models", "nir-import", "graph.nir", "-o", "imported", "--exact", "--events",
             str(ZOO / name / "vectors.npz"), cwd=tmp_path)
    python_m("gen", "--bundle", "imported", "--lanes", str(lanes), "-o", "gen", cwd=tmp_path)
    imported = bundle_io.load(tmp_path / "imported")
    zoo = bundle_io.load(ZOO / name)
    assert imported.to_json() == zoo.to_json()
    v = imported.vectors
    events = v.events[v.events[:, 0] < samples]
    result = cosim(imported, events, samples, verilog=(tmp_path / "gen" / "snn_top.v").read_text(),
                   in_gap=0.2, out_stall=0.3, seed=13)
    assert_exact(result)
    assert result["dut_predictions"] == [int(p) for p in zoo.vectors.predictions[:samples]]
