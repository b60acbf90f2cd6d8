"""The accelerator top: one engine per layer of a bundle, chained by event streams."""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .engines import input_value_shape, make_engines
from .event import EventLayout, SpikeLayout
from .trace import DEFAULT_TRACE_DEPTH, TraceMerge, fork, trace_layout, traced_layers
from .wload import WeightLoader, WeightStore

__all__ = ["Accelerator", "Status", "input_value_shape"]


class Status(data.Struct):
    """The optional status port: cycle counters of the sequencer.

    ``sample_cycles`` counts from the current sample's first input transfer to its latest
    step's closing output transfer; ``step_cycles`` is the time between the last two closing
    output transfers (a step's interval in steady state); ``steps`` counts closed output steps
    and ``sops`` the synaptic operations of every engine since reset (the sum of the engines'
    ``counters.sops``, :class:`hdl.event.EngineCounters`).
    """
    sample_cycles: 32
    step_cycles: 32
    steps: 32
    sops: 32


class Accelerator(wiring.Component):
    """A whole SNN from a bundle, with the generated top's ports (DESIGN.md section 5).

    Layers run as a pipeline of engines (:func:`hdl.engines.make_engines`): layer ``l + 1``
    processes step ``t`` while layer ``l`` may already work on step ``t + 1``. ``flatten``
    needs no hardware (a convolution's output order is the flatten order). Never drops or
    reorders events under any ``ready`` pattern.

    Parameters
    ----------
    bundle : :class:`models.bundle.Bundle`
    lanes : :class:`int` or :class:`list` of :class:`int`
        Accumulate lanes, for every neuron layer or one per neuron layer. A single number is
        capped at a convolution's output channels (its lanes run across channels).
    fmt : :class:`str` or ``None``
        Weight format of linear layers (``None``: fewest stored bits per layer).
    dense : :class:`bool`
        Build the dense baseline (every input and every weight visited each step).
    queue_depth : :class:`int` or ``None``
        Events each lane of a neuron layer may queue (``None``: each engine's default).
    updates : :class:`int` or ``None``
        Neuron updates per cycle of each linear layer's sweep, as a multiple of its lanes (a
        power of two; default 1: ``U = L``).
    status : :class:`bool`
        Add the ``status`` port (:class:`Status`). Off by default: the contract's top has
        exactly the ``i`` and ``o`` streams.
    trace : :class:`bool`
        Add the ``trace`` port (:mod:`hdl.trace`): the spikes of every layer but the last, each
        event tagged with its layer's index in the bundle. Off by default. A network of one
        engine has nothing to trace and refuses it.
    trace_depth : :class:`int`
        Events each traced layer may queue before ``trace.ready`` low stalls the network.
    weights : :class:`str`
        ``"rom"`` (default): the weights are the memories' initial contents. ``"load"``: the
        weight and bias memories start empty and are filled at run time through the ``load``
        members (:mod:`hdl.wload`; linear layers only), laid out for the network's shape
        alone, so any bundle of the same shape runs on the same hardware
        (:attr:`weight_store` has the image and its ident).
    spram : :class:`int`
        With ``weights="load"``: iCE40 SPRAM blocks the largest weight memories may take
        (they become SB_SPRAM256KA instances when elaborated for a platform).

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n_in, input_value_shape(bundle))))``
    o : ``Out(stream.Signature(SpikeLayout(n_out)))``
    status : ``Out(Status)``, only with ``status=True``
    trace : ``Out(stream.Signature(TraceLayout(...)))``, only with ``trace=True``
    load_restart, load, load_done : only with ``weights="load"``
        ``In(1)``, ``In(stream.Signature(8, always_ready=True))``, ``Out(1)``: the
        :class:`~hdl.wload.WeightLoader`'s ``restart``, ``i`` and ``done``. Load only while no
        sample is in the network.
    """
    def __init__(self, bundle, *, lanes=1, fmt=None, dense=False, queue_depth=None,
                 status=False, updates=None, trace=False, trace_depth=DEFAULT_TRACE_DEPTH,
                 weights="rom", spram=0):
        if weights not in ("rom", "load"):
            raise ValueError(f"Weights must be 'rom' or 'load', not {weights!r}")
        if spram and weights != "load":
            raise ValueError(f"SPRAM holds weights loaded at run time only (weights='load'), "
                             f"not {weights!r}")
        self._bundle = bundle
        self._store = None if weights == "rom" else WeightStore(spram=spram)
        # The status port sums the engines' counters: they exist only when it does.
        self._engines = make_engines(bundle, lanes=lanes, fmt=fmt, dense=dense,
                                     updates=updates, queue_depth=queue_depth,
                                     counters=bool(status),
                                     **({} if self._store is None else {"store": self._store}))
        members = {
            "i": In(stream.Signature(EventLayout(bundle.input.size, input_value_shape(bundle)))),
            "o": Out(stream.Signature(SpikeLayout(bundle.n_out))),
        }
        if self._store is not None:
            self._store.describe(input=bundle.input.to_json())
            self._store.place()
            members.update({"load_restart": In(1),
                            "load": In(stream.Signature(8, always_ready=True)),
                            "load_done": Out(1)})
        if status:
            members["status"] = Out(Status)
        self._status = bool(status)
        self._trace = None
        if trace:
            trace_layout(bundle)                # refuses a network with nothing to trace
            taps = [(k, bundle.layers[k].n_out) for k in traced_layers(bundle)]
            self._trace = TraceMerge(taps, len(bundle.layers), depth=trace_depth)
            members["trace"] = Out(self._trace.signature.members["o"].signature)
        super().__init__(members)

    @property
    def bundle(self):
        return self._bundle

    @property
    def traced_layers(self):
        """Indices into ``bundle.layers`` of the layers on the trace port (empty without it)."""
        return [] if self._trace is None else [index for index, _ in self._trace.taps]

    @property
    def weight_store(self):
        """The :class:`~hdl.wload.WeightStore` of ``weights="load"`` (else ``None``)."""
        return self._store

    @property
    def engines(self):
        """``[(layer, engine)]`` in pipeline order."""
        return list(self._engines)

    def elaborate(self, platform):
        m = Module()
        upstream = wiring.flipped(self.i)
        if self._store is not None:
            m.submodules.loader = loader = WeightLoader(self._store)
            m.d.comb += [loader.restart.eq(self.load_restart), loader.i.valid.eq(self.load.valid),
                         loader.i.p.eq(self.load.p), self.load_done.eq(loader.done)]
            for _, engine in self._engines:
                if "load" in engine.signature.members:
                    m.d.comb += engine.load.eq(loader.o)
        if self._trace is not None:
            m.submodules.trace = self._trace
            wiring.connect(m, self._trace.o, wiring.flipped(self.trace))
        for index, (layer, engine) in enumerate(self._engines):
            m.submodules[f"l{index}_{layer.name}"] = engine
            if self._trace is not None and index > 0:
                fork(m, upstream, engine.i, getattr(self._trace, f"tap{index - 1}"))
            else:
                wiring.connect(m, upstream, engine.i)
            upstream = engine.o
        # The last layer's events become the output payload {addr, spike, last}.
        m.d.comb += [
            self.o.valid.eq(upstream.valid),
            self.o.p.addr.eq(upstream.p.addr),
            self.o.p.spike.eq(upstream.p.value),
            self.o.p.last.eq(upstream.p.last),
            upstream.ready.eq(self.o.ready),
        ]
        if self._status:
            st = self.status
            in_first = self.i.valid & self.i.ready & self.i.p.first
            out_last = self.o.valid & self.o.ready & self.o.p.last
            since_last = Signal(32)
            sample_time = Signal(32)
            m.d.sync += [sample_time.eq(sample_time + 1), since_last.eq(since_last + 1)]
            with m.If(in_first):
                m.d.sync += sample_time.eq(1)
            with m.If(out_last):
                m.d.sync += [st.sample_cycles.eq(sample_time), st.step_cycles.eq(since_last + 1),
                             since_last.eq(0), st.steps.eq(st.steps + 1)]
            m.d.comb += st.sops.eq(sum(engine.counters.sops for _, engine in self._engines))
        return m
