"""The optional trace port: every hidden layer's spikes as one stream, for debugging and for
cosimulation that compares every layer against the golden model, step by step.

The top's ``o`` stream shows only the last layer. With ``trace=True``
(:class:`hdl.top.Accelerator`, ``python -m gen --trace``) the top gets a third stream,
``trace``, that carries every event each engine but the last sends to the next one, tagged with
the layer's index in the bundle (:class:`TraceLayout`). Per layer the events keep the stream
rules between layers (ascending addresses within a step, ``last`` on the step's final event, an
empty step as one event with ``spike = 0``); the layers are interleaved in the order the events
were taken into the trace queues, fairly (round robin).

Each link between two engines is forked (:func:`fork`): an event passes to the next engine and
into its layer's trace queue in the same cycle, or not at all, so the trace never drops an event
and the network never runs ahead of it. ``trace.ready`` low therefore stalls the accelerator
once a queue is full; a user who cannot drain the trace at full rate trades speed for
visibility, never correctness.
"""
from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .contract import check_int
from .event import addr_bits

__all__ = ["TraceLayout", "TraceMerge", "fork", "traced_layers", "trace_layout",
           "DEFAULT_TRACE_DEPTH"]

DEFAULT_TRACE_DEPTH = 8


class TraceLayout(data.StructLayout):
    """``{addr, spike, last, layer}``: one event of a hidden layer on the trace port.

    ``addr`` is wide enough for the widest traced layer (``n`` neurons), ``layer`` is the
    index of the layer in the bundle's ``layers`` (``layers`` of them, so ``flatten`` and pool
    layers keep their numbers).
    """
    def __init__(self, n, layers):
        super().__init__({
            "addr": unsigned(addr_bits(n)),
            "spike": unsigned(1),
            "last": unsigned(1),
            "layer": unsigned(addr_bits(layers)),
        })


def traced_layers(bundle):
    """Indices into ``bundle.layers`` of the layers a trace port shows: every layer with
    hardware (all but ``flatten``) except the last, whose spikes are the ``o`` stream."""
    return [k for k, layer in enumerate(bundle.layers) if layer.kind != "flatten"][:-1]


def trace_layout(bundle):
    """The :class:`TraceLayout` of ``bundle``'s trace port (``ValueError`` if it has none)."""
    traced = traced_layers(bundle)
    if not traced:
        raise ValueError("The trace port shows every layer but the last, and this network has "
                         "only one layer with hardware: use the o stream")
    return TraceLayout(max(bundle.layers[k].n_out for k in traced), len(bundle.layers))


class TraceMerge(wiring.Component):
    """Queues one tap per traced layer and merges them, round robin, into one trace stream.

    Parameters
    ----------
    taps : :class:`list` of ``(layer_index, n)``
        The traced layers: their index in the bundle and their neuron count.
    layers : :class:`int`
        Layers in the bundle (sets the width of ``layer``).
    depth : :class:`int`
        Events each tap may queue (at least 2).

    Members
    -------
    tap{k} : ``In(stream.Signature(data.StructLayout({"addr", "spike", "last"})))``
        Write side of the ``k``-th queue. Not a stream in the strict sense: its ``valid`` may
        depend on the queue's ``ready`` (:func:`fork` drives it), which a queue's write port
        allows.
    o : ``Out(stream.Signature(TraceLayout(max n, layers)))``
        The trace, registered: ``valid`` and payload hold until the transfer.
    """
    def __init__(self, taps, layers, *, depth=DEFAULT_TRACE_DEPTH):
        taps = list(taps)
        if not taps:
            raise ValueError("A trace needs at least one traced layer; a one-layer network has "
                             "none (its only layer is the output)")
        check_int("Trace depth", depth, 2)
        check_int("Layers", layers, 1)
        for index, n in taps:
            check_int("Traced layer index", index, 0)
            if index >= layers:
                raise ValueError(f"Traced layer index {index} is not below the {layers} layers")
            check_int(f"Neurons of traced layer {index}", n, 1)
        self._taps, self._layers, self._depth = taps, layers, depth
        self._width = max(n for _, n in taps)
        members = {f"tap{k}": In(stream.Signature(tap_layout(n)))
                   for k, (_, n) in enumerate(taps)}
        members["o"] = Out(stream.Signature(TraceLayout(self._width, layers)))
        super().__init__(members)

    @property
    def taps(self):
        return list(self._taps)

    def elaborate(self, platform):
        m = Module()
        queues = []
        for k, (index, n) in enumerate(self._taps):
            tap = getattr(self, f"tap{k}")
            q = fifo.SyncFIFOBuffered(width=len(tap.payload.as_value()), depth=self._depth)
            m.submodules[f"queue{k}"] = q
            m.d.comb += [q.w_data.eq(tap.payload.as_value()), q.w_en.eq(tap.valid),
                         tap.ready.eq(q.w_rdy)]
            queues.append((index, q, tap_layout(n)))

        # Round robin: from the queue after the one served last, the first that has an event.
        count = len(queues)
        turn = Signal(range(max(count, 2)))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(~self.o.valid | self.o.ready):
            with m.Switch(turn):
                for start in range(count):
                    with m.Case(start):
                        for j in range(count):
                            k = (start + j) % count
                            index, q, layout = queues[k]
                            with (m.If if j == 0 else m.Elif)(q.r_rdy):
                                view = layout(q.r_data)
                                m.d.comb += q.r_en.eq(1)
                                m.d.sync += [self.o.valid.eq(1),
                                             self.o.p.addr.eq(view.addr),
                                             self.o.p.spike.eq(view.spike),
                                             self.o.p.last.eq(view.last),
                                             self.o.p.layer.eq(index),
                                             turn.eq((k + 1) % count)]
        return m


def tap_layout(n):
    """``{addr, spike, last}`` of a layer with ``n`` neurons, as its trace queue stores it."""
    return data.StructLayout({"addr": unsigned(addr_bits(n)), "spike": unsigned(1),
                              "last": unsigned(1)})


def fork(m, upstream, downstream, tap):
    """Connect ``upstream`` (an engine's output) to ``downstream`` (the next engine's input) and
    copy every transfer into ``tap``: an event moves only when both sides take it.

    ``downstream.valid`` rises only with ``tap.ready``, which falls only on a write (a
    transfer), so ``downstream`` sees a stream that keeps the rules: ``valid`` and payload hold
    until it takes the event.
    """
    m.d.comb += [
        downstream.p.eq(upstream.p),
        downstream.valid.eq(upstream.valid & tap.ready),
        tap.valid.eq(upstream.valid & downstream.ready),
        tap.p.addr.eq(upstream.p.addr),
        tap.p.spike.eq(upstream.p.value),
        tap.p.last.eq(upstream.p.last),
        upstream.ready.eq(downstream.ready & tap.ready),
    ]
