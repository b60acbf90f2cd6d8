"""Argument parsing shared by the command lines (``python -m gen``, ``python -m boards``)."""
from __future__ import annotations

import argparse
import math

__all__ = ["OneLineParser", "int_arg", "float_arg"]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit status 2 (no usage dump, no traceback)."""
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_arg(lo, hi):
    """Argument type: a base-10 integer in ``[lo, hi]``."""
    def parse(text):
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}], not {value}")
        return value
    return parse


def float_arg(lo, hi, *, hi_open=False):
    """Argument type: a number in ``[lo, hi]`` (``[lo, hi)`` with ``hi_open``), never NaN."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
        if math.isnan(value) or not (lo <= value < hi if hi_open else lo <= value <= hi):
            interval = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be in {interval}, not {text}")
        return value
    return parse
