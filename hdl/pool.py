"""Spike pooling between layers: logical OR over k x k windows, stride k (DESIGN.md section 3).

``flatten`` needs no hardware: a convolution emits its spikes in ``(k, y, x)`` row-major order,
which already is the flattened order.
"""
import math

import numpy as np
from amaranth import *
from amaranth.lib.wiring import connect, flipped

from .bitmap import EventBitmap
from .compress import SpikeCompressor
from .contract import EngineBase, check_layer
from .cycles import activity, pool_estimate
from .divmod import const_divmod
from .indexmap import IndexMap
from .lsb import CHUNK

__all__ = ["SpikePool", "pool_ref"]


def pool_ref(layer, addrs):
    """Reference: the sorted output addresses that the input spike addresses ``addrs`` set."""
    _, h, w = layer.in_shape
    _, ho, wo = layer.out_shape
    k = layer.kernel
    out = set()
    for a in addrs:
        c, r = divmod(a, h * w)
        y, x = divmod(r, w)
        if y // k < ho and x // k < wo:
            out.add(c * ho * wo + (y // k) * wo + x // k)
    return sorted(out)


class SpikePool(EngineBase):
    """``spike_pool`` as a stream stage: each step's spikes, OR-pooled, in ascending address.

    Three stages joined by streams. The *window map* (:class:`~hdl.indexmap.IndexMap`, three
    registered stages) turns each input spike into the output bit of its window; the *bitmap*
    (:class:`~hdl.bitmap.EventBitmap`) sets that bit, one event per cycle, and after the step's
    ``last`` event hands its ``ceil(n_out / CHUNK)`` words to the *compressor*
    (:class:`~hdl.compress.SpikeCompressor`), which emits the set bits in ascending address, one
    cycle per spike or empty word and one to close the step, with ``last`` on the final spike.

    Input events of a step may come in any order (and repeat); addresses ``>= C * H * W`` are
    ignored, and so are rows and columns beyond the last whole window, as PyTorch floors. An
    empty step gives one ``value = 0, last = 1`` event, and ``first`` on an input step gives
    ``first`` on its first output event. Two bitmaps alternate, so the next step is received
    while the previous one is emitted. Latency: a step's first word reaches the compressor eight
    cycles after its ``last`` event is accepted (three in the window map, five in the bitmap).
    After reset the bitmaps are cleared (``ceil(n_out / CHUNK)`` cycles) before they take events;
    the window map takes up to three events meanwhile.

    Parameters
    ----------
    layer : :class:`models.bundle.Layer`
        A ``spike_pool`` layer.
    counters : :class:`bool`
        Add the ``counters`` member (:class:`hdl.event.EngineCounters`: ``steps`` counts the
        bitmaps handed to the compressor, counted as their last word enters it; ``sops`` stays
        0).

    Members
    -------
    i : ``In(stream.Signature(EventLayout(C * H * W)))``
    o : ``Out(stream.Signature(EventLayout(C * (H // k) * (W // k))))``
    counters : ``Out(EngineCounters())``, only with ``counters=True``

    The engine contract (docs/architecture.md, "Engine contract"), as a pool has it: one lane
    (one input event per cycle), no weights (:attr:`weight_format` ``None``, no stored bits),
    no currents and no neuron sweep (:attr:`current_bits` and :attr:`updates` ``None``), no
    dense baseline; :meth:`work` and :meth:`estimate_cycles` as every engine.
    """
    def __init__(self, layer, *, counters=False):
        check_layer(layer, "spike_pool")
        if len(layer.in_shape) != 3:
            raise ValueError(f"Input shape must be (C, H, W), not {layer.in_shape!r}")
        c_in, h, w = layer.in_shape
        k = layer.kernel
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TypeError(f"Kernel must be a positive integer, not {k!r}")
        if h // k < 1 or w // k < 1:
            raise ValueError(f"Kernel must be at most the input height and width "
                             f"({min(h, w)}), not {k}")
        if tuple(layer.out_shape) != (c_in, h // k, w // k):
            raise ValueError(f"Output shape must be {(c_in, h // k, w // k)!r}, "
                             f"not {tuple(layer.out_shape)!r}")
        super().__init__(layer, counters=counters)

    def estimate_cycles(self, active_inputs, out_events):
        """Cycles of steps with the given input activity: ``(lower_bound, estimate)``.

        The bound is one cycle per input event and per output spike (``out_events``, a number
        or one per step); the estimate :func:`hdl.cycles.pool_estimate`. Numbers for one step,
        int64 arrays ``[steps]`` for a batch.
        """
        act = activity(active_inputs, self._layer.n_in)
        rows = []
        for e, o in zip(self._events(act), act.per_step(out_events)):
            e, o = math.ceil(e), math.ceil(o)
            rows.append((max(e, o), pool_estimate(e, out_size=self._layer.n_out, out_events=o)))
        return tuple(act.answer(np.array(col, dtype=np.int64)) for col in zip(*rows))

    def _events(self, act):
        if act.density is not None:
            return np.array([act.density * self._layer.n_in])
        return np.count_nonzero(act.active, axis=1)

    def _work(self, act):                                # no synaptic operations
        events = self._events(act)
        return events, np.zeros(len(events))

    def elaborate(self, platform):
        # Window map -> bitmap -> compressor. The window map divides by the layer's dimensions
        # in registered steps: address -> (channel, position) -> (channel, window row, window
        # column) -> output bit.
        m = Module()
        layer = self._layer
        _, h, w = layer.in_shape
        _, ho, wo = layer.out_shape
        k = layer.kernel

        def channel(f):                                  # address -> (channel, position)
            c, pos = const_divmod(f["addr"], h * w, layer.n_in - 1)   # larger ones: dropped
            return {"c": c, "pos": pos}

        def window(f):                                   # position -> window row and column
            y, x = const_divmod(f["pos"], w, h * w - 1)
            return {"c": f["c"], "oy": const_divmod(y, k, h - 1)[0],
                    "ox": const_divmod(x, k, w - 1)[0]}

        def output_bit(f):                               # beyond the last whole window: drop
            return {"addr": f["c"] * (ho * wo) + f["oy"] * wo + f["ox"],
                    "keep": (f["oy"] < ho) & (f["ox"] < wo)}

        m.submodules.window_map = window_map = IndexMap(layer.n_in, layer.n_out,
                                                        [channel, window, output_bit])
        m.submodules.bitmap = bitmap = EventBitmap(layer.n_out, chunk=CHUNK)
        m.submodules.compressor = compressor = SpikeCompressor(width=CHUNK, n=layer.n_out)
        connect(m, flipped(self.i), window_map.i)
        connect(m, window_map.o, bitmap.i)
        connect(m, bitmap.o, compressor.i)
        connect(m, compressor.o, flipped(self.o))

        if self._counters:                               # as a step's last word is taken
            with m.If(bitmap.o.valid & bitmap.o.ready & bitmap.o.p.end):
                m.d.sync += self.counters.steps.eq(self.counters.steps + 1)
        return m
