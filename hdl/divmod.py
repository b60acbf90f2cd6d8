"""Division by a constant, planned in integer Python and proven exact for every input.

The engines turn event addresses into coordinates (channel, row, column, window) by dividing
by layer dimensions that are known at elaboration time. :func:`const_divmod` builds such a
division as a shift, or as a multiply by a rounded-up reciprocal and a shift whose exactness it
checks for every value the input can take, so no divider is ever synthesised.
"""
import numpy as np
from amaranth import *
from amaranth.utils import bits_for

__all__ = ["const_divmod"]


def const_divmod(value, divisor, max_value):
    """``(value // divisor, value % divisor)`` for an unsigned ``value <= max_value``.

    A power of two is a shift; any other divisor is a multiply by a rounded-up reciprocal and a
    shift, whose exactness is checked here for every value up to ``max_value``.
    Combinational; the quotient is ``bits_for(max_value // divisor)`` bits wide and the
    remainder ``bits_for(divisor - 1)``.
    """
    qw, rw = bits_for(max_value // divisor), bits_for(divisor - 1)
    if divisor & (divisor - 1) == 0:
        shift = divisor.bit_length() - 1
        rem = value[:shift] if shift else Const(0, 1)
        return (value >> shift)[:qw], rem
    vals = np.arange(max_value + 1, dtype=np.int64)
    for shift in range(bits_for(max_value), 48):
        mult = -(-(1 << shift) // divisor)
        if np.array_equal((vals * mult) >> shift, vals // divisor):
            break
    else:                                                   # pragma: no cover
        raise ValueError(f"No reciprocal of {divisor} is exact up to {max_value}")
    quot = ((value * mult) >> shift)[:qw]
    return quot, (value - quot * divisor)[:rw]
