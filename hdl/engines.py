"""The engine of a layer: one factory for every layer kind, one contract for every engine.

Every engine (:class:`~hdl.linear.LinearEngine`, :class:`~hdl.conv.Conv2dEngine`,
:class:`~hdl.pool.SpikePool`) has the ports ``i`` and ``o`` (:class:`~hdl.event.EventLayout`
streams) and the same documented properties and methods (docs/architecture.md, "Engine
contract"): ``layer``, ``lanes``, ``updates``, ``weight_format``, ``weight_bits_stored``,
``weight_bits_dense``, ``weight_figures``, ``current_bits``, ``dense``, ``work(active_inputs)``
and ``estimate_cycles(active_inputs, out_events)``. Code outside the engines (the top, reports,
boards, benchmarks) uses only that contract.
"""
from amaranth import *

from models.bundle import Bundle, Layer

from .conv import Conv2dEngine
from .contract import check_int
from .linear import LinearEngine
from .pool import SpikePool

__all__ = ["make_engine", "make_engines", "input_value_shape"]


def input_value_shape(bundle):
    """Shape of the top's input event values, from the bundle's ``input`` section."""
    return (signed if bundle.input.signed else unsigned)(bundle.input.bits)


def make_engine(layer, *, value_shape=unsigned(1), lanes=1, fmt=None, dense=False,
                updates=None, queue_depth=None, counters=False, store=None):
    """The engine of ``layer``, or ``None`` for a layer that needs no hardware (``flatten``).

    Every layer kind takes the same options; a kind refuses, with a :exc:`ValueError` naming
    the layer and the option, an option it cannot honour (never ignores one). Errors of the
    engine's own checks are raised with the layer's name in front.

    Parameters
    ----------
    layer : :class:`models.bundle.Layer`
    value_shape : shape-castable
        Shape of the input event values (``unsigned(1)``: spikes from another layer; a pool
        takes nothing else).
    lanes : :class:`int`
        Accumulate lanes ``L`` (a pool has one).
    fmt : :class:`str` or ``None``
        Weight memory format: linear ``"csr"``, ``"bitmap"`` or ``"dense"`` (``None``: fewest
        stored bits); a convolution has one format, ``"sparse-kernel"`` (``"dense"`` for its
        dense baseline); a pool has none.
    dense : :class:`bool`
        Build the dense baseline (linear and conv2d layers).
    updates : :class:`int` or ``None``
        Neuron updates per sweep cycle as a multiple of the lanes: a power of two for a linear
        layer, 1 for a convolution (one update per lane); a pool sweeps no neurons.
    queue_depth : :class:`int` or ``None``
        Events each lane may queue (``None``: the engine's default; a convolution needs a
        power of two); a pool has no lanes to queue for.
    counters : :class:`bool`
        Give the engine its ``counters`` member (:class:`hdl.event.EngineCounters`, or the
        engine's extension of it).
    store : :class:`hdl.wload.WeightStore` or ``None``
        Load the weights at run time (:mod:`hdl.wload`): the engine registers its weight
        memories with the store and gets a ``load`` member. Linear layers only.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"Layer must be a models.bundle.Layer, not {layer!r:.80}")

    def refuse(option, allowed, value):
        raise ValueError(f"Layer {layer.name!r}: {option} of a {layer.kind} layer must be "
                         f"{allowed}, not {value!r}")

    if layer.kind in ("spike_pool", "flatten"):
        # No weights, no neurons: only the defaults (and spikes in) make sense.
        if fmt is not None:
            refuse("Weight format", "None", fmt)
        if dense:
            refuse("Dense baseline", "False (it has no weights)", dense)
        if updates is not None:
            refuse("Updates", "None (it has no neurons)", updates)
        if queue_depth is not None:
            refuse("Queue depth", "None", queue_depth)
        if lanes != 1:
            refuse("Lanes", "1", lanes)
    if store is not None and layer.kind == "conv2d":
        refuse("Weights", "in ROM (weights loaded at run time are built for linear layers)",
               "loaded at run time")
    if layer.kind == "conv2d":
        own = "dense" if dense else "sparse-kernel"
        if fmt not in (None, own):
            refuse("Weight format", f"None or {own!r}", fmt)
        if updates not in (None, 1):
            refuse("Updates", "None or 1 (its sweep updates one neuron per lane)", updates)
    try:
        if layer.kind == "linear":
            if updates is not None:
                check_int("Updates", updates, 1)
            return LinearEngine(layer, value_shape=value_shape, lanes=lanes, fmt=fmt,
                                dense=dense, updates=None if updates is None else updates * lanes,
                                counters=counters, **({} if store is None else {"store": store}),
                                **({} if queue_depth is None else {"fifo_depth": queue_depth}))
        if layer.kind == "conv2d":
            return Conv2dEngine(layer, value_shape=value_shape, lanes=lanes, dense=dense,
                                counters=counters,
                                **({} if queue_depth is None else {"queue_depth": queue_depth}))
        if layer.kind == "spike_pool":
            if Shape.cast(value_shape) != unsigned(1):
                refuse("Value shape", "unsigned(1) (it takes spikes)", Shape.cast(value_shape))
            return SpikePool(layer, counters=counters)
        return None
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(f"Layer {layer.name!r}: "):
            raise
        raise type(exc)(f"Layer {layer.name!r}: {exc}") from None


def make_engines(bundle, *, lanes=1, fmt=None, dense=False, updates=None, queue_depth=None,
                 counters=False, store=None):
    """``[(layer, engine)]`` for every layer of ``bundle`` that needs hardware, in order.

    Options are the network's, applied where a layer takes them: ``fmt`` and ``updates`` to
    the linear layers, ``dense`` and ``queue_depth`` to the neuron layers, ``counters`` to
    every engine. ``lanes`` is one
    number (capped at a convolution's output channels: its lanes run across channels) or one
    per neuron layer. The first engine takes the bundle's input values, the others spikes.
    """
    if not isinstance(bundle, Bundle):
        raise TypeError(f"Bundle must be a models.bundle.Bundle, not {bundle!r:.80}")
    neuron_layers = bundle.neuron_layers
    if isinstance(lanes, (list, tuple)):
        if len(lanes) != len(neuron_layers):
            raise ValueError(f"Lanes must give one value per neuron layer "
                             f"({len(neuron_layers)}), not {list(lanes)!r}")
        per_layer = dict(zip(map(id, neuron_layers), lanes))
    else:
        per_layer = {id(layer): lanes if layer.kind != "conv2d" or not isinstance(lanes, int)
                     else min(lanes, layer.out_shape[0]) for layer in neuron_layers}
    engines, value_shape = [], input_value_shape(bundle)
    for layer in bundle.layers:
        options = {"counters": counters}
        if layer.has_neurons:
            options.update(lanes=per_layer[id(layer)], dense=dense, queue_depth=queue_depth)
        if layer.kind == "linear":
            options.update(fmt=fmt, updates=updates)
        if store is not None and layer.has_neurons:
            options["store"] = store
        engine = make_engine(layer, value_shape=value_shape, **options)
        if engine is not None:
            engines.append((layer, engine))
            value_shape = unsigned(1)
    return engines
