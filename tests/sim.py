"""Stream helpers for Amaranth testbenches (after the Amaranth stream documentation).

:func:`run_sim` also enforces the stream rules of DESIGN.md section 5 on every output stream of
the DUT, whatever the testbenches do: a background monitor per ``Out`` stream member checks at
every clock edge that ``valid`` and the payload hold from the first edge ``valid`` is high until
the transfer (:class:`verif.scoreboard.StreamRules`); and once every testbench has returned, the
outputs framed in steps (payload with ``last``) are watched for a while longer: a ``valid`` then
is an event after the last expected step. A violation fails the simulation with a message naming
the stream, the cycle and the payloads.
"""
import itertools
import os
import random

from amaranth.hdl import Const, Value
from amaranth.lib import stream, wiring
from amaranth.sim import Simulator

from verif.scoreboard import StreamRules

__all__ = ["output_streams", "run_sim", "stall_stream_get", "stream_get", "stream_put",
           "step_producer"]


async def stream_put(ctx, stream, payload):
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def stall_stream_get(ctx, stream, rng, stall):
    """Withhold ``ready`` with probability ``stall`` per cycle, then take one transfer."""
    while rng.random() < stall:
        await ctx.tick()
    return await stream_get(ctx, stream)


def output_streams(dut):
    """``{path: interface}`` of the streams ``dut`` drives: its ``Out`` stream members, nested
    signatures included, except streams whose ``ready`` is a constant (``always_ready``)."""
    found = {}
    if not isinstance(dut, wiring.Component):
        return found

    def walk(members, obj, path, flipped):
        for name, member in members.items():
            if not member.is_signature:
                continue
            sig = member.signature
            # An In() member's signature comes flipped already: the flips say the direction.
            turned = flipped
            if isinstance(sig, wiring.FlippedSignature):
                sig, turned = sig.flip(), not turned
            for index in itertools.product(*(range(d) for d in member.dimensions)):
                sub = getattr(obj, name)
                for k in index:                  # an array of members: nested lists
                    sub = sub[k]
                where = path + [name + "".join(f"[{k}]" for k in index)]
                if isinstance(sig, stream.Signature):
                    if not turned and not isinstance(Value.cast(sub.ready), Const):
                        found[".".join(where)] = sub
                else:
                    walk(sig.members, sub, where, turned)

    walk(dut.signature.members, dut, [], False)
    return found


def _framed(port):
    """Whether the stream's payload is framed in steps (a ``last`` field, as every engine and
    the top of DESIGN.md section 5 carry): then nothing may follow the last expected step."""
    try:
        return "last" in dict(port.payload.shape().members)
    except AttributeError:
        return False


def _describe(port):
    def describe(bits):
        try:
            layout = port.payload.shape()
            view = layout.from_bits(bits)
            return str({field: int(view[field]) for field, _ in layout})
        except (AttributeError, TypeError, ValueError):
            return f"0x{bits:x}"
    return describe


def _stream_monitor(name, port, state, watch_tail):
    """Background testbench: the stream rules of ``port`` at every edge (see module doc), and
    with ``watch_tail`` no ``valid`` after the testbenches have returned."""
    payload = Value.cast(port.payload)
    rules = StreamRules(name, describe=_describe(port))

    async def monitor(ctx):
        cycle = 0
        while True:
            _, rst, valid, ready, bits = await ctx.tick().sample(port.valid, port.ready, payload)
            cycle += 1
            if rst:
                rules.reset()
                continue
            # At the first edge after the testbenches returned, a transfer still belongs to the
            # run (the consumer left `ready` high for an event it saw coming); after it, or
            # from that edge on if there is none, any `valid` is an extra event.
            closing = state["closed"] and watch_tail and rules.closed_at is None
            grace = closing and valid and ready
            if closing and not grace:
                rules.close(cycle - 1)
            message = rules.edge(cycle, bool(valid), bool(ready), bits if valid else None)
            if message is not None:
                raise AssertionError(message)
            if grace:
                rules.close(cycle)
    return monitor


def run_sim(dut, testbenches, *, watchdog_cycles, name="dut", vcd=None, tail_cycles=None):
    """Run ``testbenches`` against ``dut`` with a watchdog that fails after a cycle budget.

    Every output stream of ``dut`` (:func:`output_streams`) is held to the stream rules while
    the testbenches run. A stream framed in steps (its payload has ``last``) must then stay quiet
    (``valid`` low) for ``tail_cycles`` after the last testbench returns: by default an eighth of
    the cycles run so far (a step, for a run of eight steps), at least 64, within what is left
    of the watchdog's budget. ``tail_cycles=0`` skips that watch (a test that leaves events in
    the DUT on purpose); a positive ``tail_cycles`` watches every output stream.

    Set the environment variable ``SIM_VCD`` to a folder to dump a waveform there.
    """
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    streams = output_streams(dut)
    state = {"done": 0, "closed": False}

    def finishing(tb):
        async def wrapped(ctx):
            await tb(ctx)
            state["done"] += 1
        return wrapped

    for tb in testbenches:
        sim.add_testbench(finishing(tb))

    async def watchdog(ctx):
        for _ in range(watchdog_cycles):
            await ctx.tick()
        raise TimeoutError(f"{name} made no progress within {watchdog_cycles} cycles")

    sim.add_testbench(watchdog, background=True)
    watched = {path for path, port in streams.items()
               if tail_cycles is not None and tail_cycles > 0 or
               tail_cycles is None and _framed(port)}
    for path, port in streams.items():
        sim.add_testbench(_stream_monitor(path, port, state, path in watched), background=True)

    if watched:
        async def quiet_after_the_end(ctx):
            # Not a background testbench: the simulation runs until the tail has been watched.
            ran = 0
            while state["done"] < len(testbenches):
                await ctx.tick()
                ran += 1
            tail = tail_cycles if tail_cycles is not None else max(64, ran // 8)
            tail = min(tail, watchdog_cycles - ran - 1)
            state["closed"] = True
            for _ in range(tail):
                await ctx.tick()
        sim.add_testbench(quiet_after_the_end)

    folder = vcd or os.environ.get("SIM_VCD")
    if folder:
        with sim.write_vcd(os.path.join(folder, f"{name}.vcd")):
            sim.run()
    else:
        sim.run()


def rng_for(*parts):
    return random.Random("/".join(str(p) for p in parts))


def step_producer(dut, steps, *, gap, seed):
    """A producer testbench for an engine's ``i``: ``steps`` is ``[(first, [(addr, value)])]``.

    Each step's events carry ``last`` on the final one (an empty step is one ``value = 0``
    event) and ``first`` on a sample's first; random ``valid`` gaps with probability ``gap``.
    """
    async def producer(ctx):
        rng = random.Random(seed)
        for first, events in steps:
            events = events or [(0, 0)]
            for n, (addr, value) in enumerate(events):
                while rng.random() < gap:
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"addr": addr, "value": value,
                                        "last": int(n == len(events) - 1),
                                        "first": int(first and n == 0)})
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
    return producer


def top_consumer(dut, n_out_events, results, *, stall, seed):
    """A consumer testbench for an accelerator's ``o``: ``n_out_events`` output events, as
    ``(addr if spike else 0, spike, last)``, appended to ``results``; random ``ready`` stalls
    with probability ``stall``."""
    async def consumer(ctx):
        rng = random.Random(seed)
        for _ in range(n_out_events):
            while rng.random() < stall:
                await ctx.tick()
            out = await stream_get(ctx, dut.o)
            results.append((out.addr if out.spike else 0, out.spike, out.last))
    return consumer
