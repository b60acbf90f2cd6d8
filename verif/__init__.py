"""Cosimulation of the emitted Verilog against the golden model (docs/verification.md).

``verif.runner.cosimulate`` builds and runs a top on Icarus or Verilator and returns the counts;
``verif.streams`` and ``verif.scoreboard`` are the cocotb drivers and the checker it uses;
``python -m verif --bundle DIR`` does it all for a bundle.
"""
