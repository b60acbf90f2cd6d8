"""Argument parsing shared by the command lines (``python -m gen``, ``python -m boards``)."""
from __future__ import annotations

import argparse
import math

__all__ = ["OneLineParser", "check_bundle_options", "float_arg", "int_arg", "lanes_arg"]


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


def lanes_arg(lo, hi):
    """Argument type: one integer in ``[lo, hi]``, or a comma-separated list of them."""
    one = int_arg(lo, hi)

    def parse(text):
        parts = text.split(",")
        if len(parts) == 1:
            return one(text)
        return [one(part.strip()) for part in parts]
    return parse


def check_bundle_options(parser, bundle, *, fmt="auto", updates=None, lanes=1):
    """Refuse hardware options that no layer of ``bundle`` would use (one line, exit 2).

    ``fmt`` and ``updates`` set linear layers only; a list of ``lanes`` needs one entry per
    neuron layer.
    """
    kinds = {layer.kind for layer in bundle.layers}
    if "linear" not in kinds:
        if fmt not in (None, "auto"):
            parser.error(f"--format {fmt} sets linear layers' weight memory, and this bundle "
                         f"has none (convolutions keep sparse kernels; --dense builds the dense "
                         f"baseline)")
        if updates is not None:
            parser.error("--updates sets linear layers' sweep, and this bundle has none "
                         "(a convolution sweeps one neuron per lane)")
    n_neuron = len(bundle.neuron_layers)
    if isinstance(lanes, list) and len(lanes) != n_neuron:
        parser.error(f"--lanes must give one number or one per neuron layer ({n_neuron}), "
                     f"not {len(lanes)}")
