"""Stream helpers for Amaranth testbenches (after the Amaranth stream documentation)."""
import random

from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "run_sim", "stall_stream_get", "step_producer"]


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


def run_sim(dut, testbenches, *, watchdog_cycles, name="dut", vcd=None):
    """Run ``testbenches`` against ``dut`` with a watchdog that fails after a cycle budget.

    Set the environment variable ``SIM_VCD`` to a folder to dump a waveform there.
    """
    import os
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)

    async def watchdog(ctx):
        for _ in range(watchdog_cycles):
            await ctx.tick()
        raise TimeoutError(f"{name} made no progress within {watchdog_cycles} cycles")

    sim.add_testbench(watchdog, background=True)
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
