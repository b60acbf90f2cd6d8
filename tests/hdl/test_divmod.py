# amaranth: UnusedElaboratable=no
import pytest
from amaranth import *
from amaranth.sim import Simulator

from hdl.divmod import const_divmod


def rtl_divmod(divisor, max_value):
    """``(quotient, remainder)`` of the combinational divider for every value up to the max."""
    value = Signal(range(max_value + 1))
    q, r = const_divmod(value, divisor, max_value)
    got = []

    async def bench(ctx):
        for v in range(max_value + 1):
            ctx.set(value, v)
            got.append((ctx.get(q), ctx.get(r)))

    m = Module()
    m.d.comb += Signal().eq(q + r)
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("divisor, max_value", [(1, 20), (2, 33), (3, 200), (7, 1000),
                                                (16, 300), (25, 783), (49, 4095)])
def test_exact(divisor, max_value):
    assert rtl_divmod(divisor, max_value) == [divmod(v, divisor) for v in range(max_value + 1)]


@pytest.mark.parametrize("divisor, max_value, widths", [(1, 20, (5, 1)), (16, 300, (5, 4)),
                                                        (25, 783, (5, 5)), (49, 4095, (7, 6))])
def test_widths(divisor, max_value, widths):
    q, r = const_divmod(Signal(range(max_value + 1)), divisor, max_value)
    assert (len(q), len(r)) == widths
