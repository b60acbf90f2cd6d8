"""Settings passed from the pytest side (:mod:`verif.runner`) to the cocotb test
(:mod:`verif.test_top`).

They travel through environment variables named ``COSIM_<FIELD>`` because the cocotb test runs
inside the simulator process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

__all__ = ["CosimConfig"]


@dataclass
class CosimConfig:
    """What one cosimulation run does.

    Parameters
    ----------
    bundle : :class:`str`
        Bundle folder; its network is the golden model the DUT is checked against.
    result : :class:`str`
        Path of the JSON file the cocotb test writes its counts and cycles to.
    events : :class:`str`
        ``.npz`` with ``events`` ``[n, 4]`` and ``samples``; empty: the bundle's ``vectors.npz``.
    seed : :class:`int`
        Seeds the valid gaps, ready stalls, shuffling and extra zero events.
    in_gap : :class:`float`
        Probability that the source withholds ``valid`` for a cycle before an event.
    out_stall : :class:`float`
        Probability that the sink withholds ``ready`` in a cycle.
    trace_stall : :class:`float`
        The same for the ``trace`` port's sink, where the DUT has one (:mod:`hdl.trace`).
    shuffle : :class:`bool`
        Shuffle the input events within each step.
    zero_events : :class:`float`
        Extra ``value = 0`` events per real input event (on average).
    watchdog : :class:`int`
        Cycles without any transfer on either stream before the test fails; 0: derived from the
        network size.
    period_ns : :class:`int`
        Clock period.
    reset_cycles : :class:`int`
        Cycles ``rst`` is held high at the start.
    tail_cycles : :class:`int`
        Cycles the output is still watched after the final step, to catch extra events.
    """
    bundle: str = ""
    result: str = ""
    events: str = ""
    seed: int = 0
    in_gap: float = 0.0
    out_stall: float = 0.0
    trace_stall: float = 0.0
    shuffle: bool = False
    zero_events: float = 0.0
    watchdog: int = 0
    period_ns: int = 10
    reset_cycles: int = 4
    tail_cycles: int = 64

    def to_env(self):
        """Environment variables for the simulator process."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            env[f"COSIM_{f.name.upper()}"] = str(int(value) if isinstance(value, bool) else value)
        return env

    @classmethod
    def from_env(cls, environ=None):
        environ = os.environ if environ is None else environ
        kwargs = {}
        for f in fields(cls):
            key = f"COSIM_{f.name.upper()}"
            if key not in environ:
                continue
            kind = type(f.default)
            raw = environ[key]
            kwargs[f.name] = bool(int(raw)) if kind is bool else kind(raw)
        return cls(**kwargs)
