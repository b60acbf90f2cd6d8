# amaranth: UnusedElaboratable=no
"""The convolution engine's own stages, each against its integer reference, under stalls."""
import random

import pytest
from amaranth import *

from hdl.conv import SpikeDecoder, decode_ref, plan_conv
from hdl.conv_stages import (ChannelPacker, ConvSpike, KernelScatter, SpikeBroadcast, pack_ref,
                             scatter_ref)
from tests.hdl.test_conv import conv_layer
from tests.sim import run_sim, stall_stream_get, stream_put

GEOMETRIES = {
    # name: conv_layer parameters
    "k3s1p1": dict(cin=2, cout=4, size=(5, 6), kernel=3, padding=1),
    "k5s2p1": dict(cin=2, cout=3, size=(8, 7), kernel=5, stride=2, padding=1),
    "k2s3p0": dict(cin=3, cout=2, size=(7, 5), kernel=2, stride=3),
    "k3s2p2": dict(cin=1, cout=5, size=(6, 6), kernel=3, stride=2, padding=2),
}


def random_bit_steps(rng, n, steps, *, value_max=3):
    """Steps of ``(bit, value)`` as a compressor hands them out (ascending; some values 0 as
    a lookup gives for a zero sum), and empty steps."""
    out = []
    for _ in range(steps):
        bits = sorted(rng.sample(range(n), rng.choice([0, 1, n // 3, n // 2])))
        out.append([(b, rng.choice([0] + [1] * 3 + list(range(1, value_max + 1))))
                    for b in bits])
    return out


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_decoder_matches_reference(name, dense, stall):
    layer = conv_layer(1, **GEOMETRIES[name])
    plan = plan_conv(layer, lanes=2, dense=dense)
    rng = random.Random(name)
    steps = random_bit_steps(rng, layer.n_in, 6)
    dut = SpikeDecoder(layer, plan, value_shape=unsigned(2), dense=dense)
    got = []

    async def producer(ctx):
        for events in steps:
            events = events or [(0, 0)]
            for n, (bit, value) in enumerate(events):
                while rng.random() < 0.3:
                    await ctx.tick()
                await stream_put(ctx, dut.i, {"addr": bit, "value": value,
                                              "last": int(n == len(events) - 1), "first": 0})

    async def consumer(ctx):
        r = random.Random(1)
        ends = 0
        while ends < len(steps):
            spike = await stall_stream_get(ctx, dut.o, r, stall)
            fields = {"hits": spike.hits, "end": spike.end, "bank": spike.bank}
            if spike.hits:
                fields.update({name: getattr(spike, name) for name in
                               ("rec", "qy0", "qy1", "qx0", "qx_end", "tgt", "value")})
            got.append(fields)
            ends += spike.end

    run_sim(dut, [producer, consumer], watchdog_cycles=40 * layer.n_in * len(steps),
            name="decoder")
    expect = []
    for t, events in enumerate(steps):
        events = events or [(0, 0)]
        for n, (bit, value) in enumerate(events):
            fields = decode_ref(layer, plan, bit, value, dense=dense)
            end = int(n == len(events) - 1)
            if fields["hits"] or end:
                expect.append({**fields, "end": end, "bank": t % 2})
    assert any(e["hits"] for e in expect)
    assert got == expect


def spike_fields(fields, *, bank=0, end=0):
    """A complete :class:`ConvSpike` payload from :func:`decode_ref`'s fields."""
    spike = {"rec": 0, "qy0": 0, "qy1": 0, "qx0": 0, "qx_end": 0, "tgt": 0, "value": 0,
             "hits": 0, **fields}
    return {**spike, "bank": bank, "end": end}


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("lanes, dense", [(1, False), (3, False), (2, True)])
def test_scatter_matches_reference(name, lanes, dense):
    layer = conv_layer(2, **{**GEOMETRIES[name], "cout": 4}, sparsity=0.6)
    plan = plan_conv(layer, lanes=lanes, dense=dense)
    _, ho, wo = layer.out_shape
    layout = SpikeDecoder(layer, plan, value_shape=signed(3), dense=dense).o.p.shape()
    rng = random.Random(f"{name}-{lanes}")
    spikes = []
    for t, events in enumerate(random_bit_steps(rng, layer.n_in, 5)):
        kept = [spike_fields(decode_ref(layer, plan, bit, rng.choice([-4, -1, 1, 3]),
                                        dense=dense), bank=t % 2) for bit, value in events]
        kept = [s for s in kept if s["hits"]] or [spike_fields({}, bank=t % 2)]
        kept[-1]["end"] = 1
        spikes += kept
    for lane in range(lanes):
        dut = KernelScatter(plan, lane, spike=layout, width=wo, positions=ho * wo,
                            current_bits=12)
        ops, ends, sent = [], [], []

        async def producer(ctx, dut=dut, sent=sent):
            for spike in spikes:
                while rng.random() < 0.3:
                    await ctx.tick()
                await stream_put(ctx, dut.i, spike)
            sent.append(True)

        async def monitor(ctx, dut=dut, ops=ops, ends=ends, sent=sent):
            idle = 0
            while idle < 10:
                _, _, valid, op, end, busy = await ctx.tick().sample(
                    dut.o.valid, dut.o.payload, dut.end, dut.busy)
                if valid:
                    ops.append((op.addr, op.delta, op.bank))
                if end:
                    ends.append(len(ops))
                idle = idle + 1 if sent and not busy else 0

        run_sim(dut, [producer, monitor], watchdog_cycles=4000, name="scatter")
        expect, expect_ends = [], []
        for spike in spikes:
            expect += [(addr, delta, spike["bank"]) for addr, delta in
                       scatter_ref(plan, lane, spike, width=wo, positions=ho * wo)]
            if spike["end"]:
                expect_ends.append(len(expect))
        assert ops == expect
        assert ends == expect_ends


@pytest.mark.parametrize("stalls", [(0.0, 0.0, 0.0), (0.0, 0.5, 0.9), (0.7, 0.7, 0.7)])
def test_broadcast_every_reader_every_entry(stalls):
    dut, entries = SpikeBroadcast(unsigned(8), depth=4, readers=3), list(range(60))
    got = [[] for _ in stalls]

    async def producer(ctx):
        rng = random.Random(0)
        for entry in entries:
            while rng.random() < 0.2:
                await ctx.tick()
            await stream_put(ctx, dut.i, entry)

    def reader(n):
        async def testbench(ctx):
            rng = random.Random(n + 1)
            for _ in entries:
                got[n].append(await stall_stream_get(ctx, dut.o[n], rng, stalls[n]))
        return testbench

    run_sim(dut, [producer] + [reader(n) for n in range(3)], watchdog_cycles=2000,
            name="broadcast")
    assert got == [entries] * 3


@pytest.mark.parametrize("lanes, positions", [(1, 16), (3, 20), (2, 9)])
@pytest.mark.parametrize("stall", [0.0, 0.6])
def test_packer_matches_reference(lanes, positions, stall):
    layer = conv_layer(3, cin=1, cout=7, size=(6, 6), kernel=3)
    channels = plan_conv(layer, lanes=lanes).channels
    local = max(map(len, channels))
    rng = random.Random(f"{lanes}-{positions}")
    sweeps = [(t % 3 == 0, [[rng.random() < 0.3 if r < len(chans) * positions else 0
                             for chans in channels] for r in range(local * positions)])
              for t in range(5)]
    dut = ChannelPacker(channels, positions)
    words = []

    async def sweeper(ctx):
        for first, rows in sweeps:
            while not ctx.get(dut.room) or rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.reserve, 1)
            await ctx.tick()
            ctx.set(dut.reserve, 0)
            for r, row in enumerate(rows):          # one row per cycle: `i` never waits
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"bits": sum(b << j for j, b in enumerate(row)),
                                        "index": r, "end": int(r == len(rows) - 1),
                                        "first": int(first and r == 0)})
                await ctx.tick()
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        r = random.Random(2)
        for _ in range(len(sweeps) * dut.words):
            w = await stall_stream_get(ctx, dut.o, r, stall)
            words.append((w.bits, w.index, w.end, w.first))

    run_sim(dut, [sweeper, consumer], watchdog_cycles=200 * len(sweeps) * local * positions,
            name="packer")
    assert words == pack_ref(channels, positions, sweeps)


def test_wrong_parameters():
    with pytest.raises(TypeError, match=r"^Depth must be an integer of at least 2, not 1$"):
        SpikeBroadcast(unsigned(4), depth=1, readers=2)
    with pytest.raises(ValueError, match=r"^Depth must be a power of two, not 6$"):
        SpikeBroadcast(unsigned(4), depth=6, readers=2)
    with pytest.raises(TypeError, match=r"^Readers must be a positive integer, not 0$"):
        SpikeBroadcast(unsigned(4), depth=4, readers=0)
    layer = conv_layer(0, **GEOMETRIES["k3s1p1"])
    plan = plan_conv(layer, lanes=2)
    spike = ConvSpike(records=2, taps=3, targets=40, value_shape=unsigned(1))
    with pytest.raises(ValueError, match=r"^Lane must be one of the plan's 2 lanes, not 2$"):
        KernelScatter(plan, 2, spike=spike, width=6, positions=30, current_bits=10)
