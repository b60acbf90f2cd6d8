# amaranth: UnusedElaboratable=no
"""On-board rate encoding (hdl/rate.py) against the generator's reference, models/onboard.py."""
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl import protocol
from hdl.event import addr_bits
from hdl.link import HostLink
from hdl.protocol import Command, encode_frame, sample_stream
from hdl.rate import RateEncoder, RateInput, rate_sample, seed_events, xorshift32
from hdl.top import Accelerator
from models import golden, onboard
from models.synth import random_linear_bundle
from tests.hdl.standin import StandIn
from tests.hdl.test_link import DIVISOR, results, rtl_stream
from tests.sim import run_sim, stream_get


def unpack(data, *, n_in, bits):
    """Packed events -> ``[(addr, value, last, first)]`` (a separately written unpacker)."""
    ab = addr_bits(n_in)
    nbytes = (ab + bits + 2 + 7) // 8
    words = [int.from_bytes(data[k:k + nbytes], "little") for k in range(0, len(data), nbytes)]
    return [(w & ((1 << ab) - 1), (w >> ab) & ((1 << bits) - 1), (w >> (ab + bits)) & 1,
             (w >> (ab + bits + 1)) & 1) for w in words]


def expected_stream(q, seeds, *, steps, bits):
    """What the encoder must send: the reference's spikes in the stream form of DESIGN.md
    section 5, sample after sample."""
    events = onboard.rate_events(q, seeds, steps=steps, bits=bits)
    out = []
    for s in range(len(q)):
        rows = events[events[:, 0] == s][:, 1:]
        out += [tuple(int(x) for x in e) for e in sample_stream(rows, steps)]
    return out


def intensities(rng, samples, n_in, bits, density=0.4):
    q = rng.integers(1, 2 ** bits, size=(samples, n_in))
    q[rng.random((samples, n_in)) > density] = 0
    q[-1] = 0                                             # a blank sample: empty steps only
    q[0, -1] = 2 ** bits - 1                              # the last address, at full intensity
    return q


def run_encoder(n_in, bits, passes, n_out, *, gap, stall, seed, steps=None):
    """Feed ``passes`` (lists of input events) to a RateEncoder; return its first ``n_out``
    output events (or, with ``steps``, those up to the ``steps``-th ``last``) and the cycles
    the run took."""
    dut = RateEncoder(n_in, bits)
    got, cycles = [], [0]

    async def producer(ctx):
        rng = random.Random(seed)
        for events in passes:
            for addr, value, last, first in events:
                while rng.random() < gap:
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"addr": addr, "value": value, "last": last,
                                        "first": first})
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)

    def done():
        return (sum(e[2] for e in got) >= steps) if steps is not None else len(got) >= n_out

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        while not done():
            while rng.random() < stall:
                await ctx.tick()
            out = await stream_get(ctx, dut.o)
            got.append((int(out.addr), int(out.value), int(out.last), int(out.first)))

    async def clock(ctx):
        while not done():
            await ctx.tick()
            cycles[0] += 1

    run_sim(dut, [producer, consumer, clock], watchdog_cycles=200_000, name="rate_encoder")
    return got, cycles[0]


def link_passes(q, seeds, *, n_in, bits, steps):
    """The passes a board link feeds for these samples: each sample's one stored step,
    ``steps`` times, ``first`` on the first event of the first pass."""
    passes = []
    for row, seed in zip(q, seeds):
        data, _ = rate_sample(row, int(seed), n_in=n_in, bits=bits)
        stored = unpack(data, n_in=n_in, bits=bits)
        for t in range(steps):
            events = list(stored)
            if t == 0:
                events[0] = events[0][:3] + (1,)
            passes.append(events)
    return passes


@pytest.mark.parametrize("n_in,bits,gap,stall", [
    (64, 4, 0.0, 0.0), (37, 3, 0.3, 0.5), (16, 1, 0.5, 0.2), (20, 8, 0.2, 0.7), (1, 2, 0.1, 0.3),
])
def test_encoder_draws_the_reference_spikes(n_in, bits, gap, stall):
    """Every event, in order, as models/onboard.py draws them, under random input gaps and
    output stalls; samples back to back, each reseeded at its first pass."""
    rng = np.random.default_rng(n_in * 10 + bits)
    samples, steps = 4, 3
    q = intensities(rng, samples, n_in, bits)
    seeds = onboard.sample_seeds(n_in + bits, samples)
    want = expected_stream(q, seeds, steps=steps, bits=bits)
    passes = link_passes(q, seeds, n_in=n_in, bits=bits, steps=steps)
    got, _ = run_encoder(n_in, bits, passes, len(want), gap=gap, stall=stall, seed=n_in)
    assert got == want
    assert sum(e[1] for e in got) > 0                   # it did draw spikes


def test_encoder_walks_one_address_per_cycle():
    """With no gaps and no stalls a step takes its seed events, ``n_in`` cycles and one to
    close it (plus the pipeline's fill)."""
    n_in, bits, steps = 50, 4, 5
    q = intensities(np.random.default_rng(3), 2, n_in, bits)
    seeds = onboard.sample_seeds(3, 2)
    want = expected_stream(q, seeds, steps=steps, bits=bits)
    passes = link_passes(q, seeds, n_in=n_in, bits=bits, steps=steps)
    got, cycles = run_encoder(n_in, bits, passes, len(want), gap=0, stall=0, seed=1)
    assert got == want
    per_step = seed_events(n_in, bits) + n_in + 1
    assert 2 * steps * per_step <= cycles <= 2 * steps * per_step + 4


def test_seed_is_loaded_only_on_a_first_pass():
    """Seed events without ``first`` are skipped: the state runs on across steps. A later
    step's seed events may carry any bits without changing the draws."""
    n_in, bits, steps = 24, 4, 4
    q = intensities(np.random.default_rng(5), 1, n_in, bits, density=0.9)[:1]
    q[0, 0] = 5
    seeds = np.array([123456789])
    want = expected_stream(q, seeds, steps=steps, bits=bits)
    passes = link_passes(q, seeds, n_in=n_in, bits=bits, steps=steps)
    k = seed_events(n_in, bits)
    for events in passes[1:]:                            # scramble the later seed events
        for j in range(k):
            events[j] = (j * 7 % n_in, 2 ** bits - 1 - j % 2, events[j][2], 0)
    got, _ = run_encoder(n_in, bits, passes, len(want), gap=0.2, stall=0.2, seed=5)
    assert got == want


def test_malformed_steps_never_stall_the_stream():
    """Addresses out of order, repeated, or beyond ``n_in - 1``: each step is still closed by
    exactly one ``last``, and nothing hangs. The step's intensities end at the first event the
    walk has passed (3 after 9): only address 9 may spike, and the draws go on as for a
    well-formed step (the next sample below is drawn as the reference draws it)."""
    n_in, bits, steps = 20, 3, 6
    k = seed_events(n_in, bits)
    seed = [(1, 0, 0, 1)] + [(0, 0, 0, 0)] * (k - 1)
    body = [(9, 7, 0, 0), (3, 7, 0, 0), (9, 7, 0, 0), (31, 7, 0, 0), (19, 7, 0, 0),
            (25, 7, 1, 0)]
    passes = [(seed if t == 0 else [s[:3] + (0,) for s in seed]) + body for t in range(steps)]
    q = np.zeros((1, n_in), dtype=np.int64)
    q[0, [2, 9, 15]] = [7, 5, 6]
    seeds = np.array([99])
    after = link_passes(q, seeds, n_in=n_in, bits=bits, steps=steps)
    want = expected_stream(q, seeds, steps=steps, bits=bits)
    got, _ = run_encoder(n_in, bits, passes + after, None, gap=0.3, stall=0.3, seed=9,
                         steps=2 * steps)
    split = [n for n, e in enumerate(got) if e[2]][steps - 1] + 1
    bad, good = got[:split], got[split:]
    assert sum(e[2] for e in bad) == steps and bad[-1][2] == 1
    assert {e[0] for e in bad if e[1]} <= {9} and any(e[1] for e in bad)
    assert bad[0][3] == 1 and not any(e[3] for e in bad[1:])
    assert good == want


def test_hardware_generator_is_the_reference():
    """xorshift32 as gateware against the numpy reference, on random states."""
    from amaranth import Module, Signal
    states = [1, 2 ** 32 - 1, 0x80000000] + random.Random(2).sample(range(1, 2 ** 32), 200)
    m = Module()
    x = Signal(32)
    y = Signal(32)
    m.d.comb += y.eq(xorshift32(x))
    sim = Simulator(m)
    got = []

    async def bench(ctx):
        for s in states:
            ctx.set(x, s)
            got.append(ctx.get(y))
    sim.add_testbench(bench)
    sim.run()
    assert got == [int(v) for v in onboard.xorshift32(np.array(states, dtype=np.uint64))]


def test_rate_sample_packing():
    n_in, bits = 100, 4                                  # 7 address bits: 11 a seed event
    q = np.zeros(n_in, dtype=np.int64)
    q[[3, 50, 99]] = [1, 15, 7]
    data, count = rate_sample(q, 0xDEADBEEF, n_in=n_in, bits=bits)
    assert seed_events(n_in, bits) == 3 and count == 6 and len(data) == 12
    events = unpack(data, n_in=n_in, bits=bits)
    bits_of_seed = sum((a | v << 7) << (11 * k) for k, (a, v, _, _) in enumerate(events[:3]))
    assert bits_of_seed & 0xFFFFFFFF == 0xDEADBEEF and bits_of_seed >> 32 == 0
    assert events[3:] == [(3, 1, 0, 0), (50, 15, 0, 0), (99, 7, 1, 0)]
    assert not any(e[2] or e[3] for e in events[:3])
    blank, count = rate_sample(np.zeros(n_in, dtype=np.int64), 1, n_in=n_in, bits=bits,
                               first=True)
    assert count == 3 and unpack(blank, n_in=n_in, bits=bits) == [(1, 0, 0, 1), (0, 0, 0, 0),
                                                                   (0, 0, 1, 0)]


@pytest.mark.parametrize("call,error,message", [
    (lambda: RateEncoder(0, 4), TypeError, r"^N in must be a positive integer, not 0$"),
    (lambda: RateEncoder(8, 0), ValueError, r"^Intensity bits must be in \[1, 8\], not 0$"),
    (lambda: RateEncoder(8, 9), ValueError, r"^Intensity bits must be in \[1, 8\], not 9$"),
    (lambda: RateEncoder(8, True), TypeError, r"^Intensity bits must be an integer, not True$"),
    (lambda: rate_sample(np.zeros(8, dtype=np.int64), 0, n_in=8, bits=4), ValueError,
     r"^Seed must be an integer in \[1, 4294967295\] \(0 is the generator's fixed point\), "
     r"not 0$"),
    (lambda: rate_sample(np.full(8, 16), 1, n_in=8, bits=4), ValueError,
     r"^Intensity must be in \[0, 15\], not 16$"),
    (lambda: rate_sample(np.zeros(7, dtype=np.int64), 1, n_in=8, bits=4), ValueError,
     r"^Intensities must be 8 integers, not int64 of shape \[7\]$"),
])
def test_bad_parameters(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_rate_input_refuses_what_it_cannot_drive():
    direct = random_linear_bundle(n_in=12, n_out=5, sparsity=0.5, seed=1, input_bits=4)
    with pytest.raises(ValueError, match=r"^Rate input feeds 1-bit spikes, but the accelerator "
                                         r"takes unsigned\(4\) input values"):
        RateInput(StandIn(direct), n_in=12, bits=4)
    rate = random_linear_bundle(n_in=12, n_out=5, sparsity=0.5, seed=1)
    with pytest.raises(ValueError, match=r"^Rate input is not built for weights loaded at run "
                                         r"time: build with ROM weights$"):
        RateInput(Accelerator(rate, weights="load"), n_in=12, bits=4)
    with pytest.raises(TypeError, match=r"^Accelerator must be a wiring.Component"):
        RateInput(object(), n_in=12, bits=4)


def rate_link(bundle, bits, *, real, capacity=64, stall=True):
    inner = Accelerator(bundle) if real else StandIn(bundle, stall=stall)
    return HostLink(RateInput(inner, n_in=bundle.input.size, bits=bits),
                    n_in=bundle.input.size, n_out=bundle.n_out, divisor=DIVISOR,
                    capacity=capacity, timeout=2000, clock_hz=1_000_000, ident=7,
                    steps=bundle.input.steps, replay=True)


@pytest.mark.parametrize("real", [False, True], ids=["standin", "accelerator"])
def test_batch_of_rate_samples_equals_golden(real):
    """Seeds and intensities in BATCH frames through a replaying link: the RESULTs are the
    golden model's on the spikes the reference draws (several frames, two in flight)."""
    bits, samples, steps = 4, 5, 4
    bundle = random_linear_bundle(n_in=12, n_out=5, sparsity=0.5, seed=21, steps=steps)
    q = intensities(np.random.default_rng(21), samples, 12, bits, density=0.6)
    seeds = onboard.sample_seeds(77, samples)
    events = onboard.rate_events(q, seeds, steps=steps, bits=bits)
    trace = golden.run(bundle, golden.events_to_dense(events, samples, steps, 12))
    packed = [rate_sample(q[s], int(seeds[s]), n_in=12, bits=bits)[0] for s in range(samples)]
    frames = [(encode_frame(Command.BATCH, b"".join(packed[:2])), 0),
              (encode_frame(Command.BATCH, b"".join(packed[2:4])), 0),
              (encode_frame(Command.BATCH, packed[4]), 2)]      # once a half is free
    link = rate_link(bundle, bits, real=real)
    info = link.info
    assert info.rate and info.rate_bits == 4 and info.replay and info.batch
    assert protocol.Info.unpack(info.pack()) == info
    got = results(rtl_stream(link, frames, total=samples), 5)
    assert [r.counts for r in got] == [tuple(c) for c in golden.spike_counts(trace.output)]
    assert [r.predicted for r in got] == golden.predict(trace.output).tolist()
    assert [r.steps for r in got] == [steps] * samples
    assert int(golden.spike_counts(trace.output).sum()) > 0


def test_info_of_other_links_is_unchanged():
    """A link without rate input reports no FLAG_RATE and a zero rate-bits byte (the byte
    that was padding before)."""
    bundle = random_linear_bundle(n_in=12, n_out=5, sparsity=0.5, seed=2)
    link = HostLink(StandIn(bundle), n_in=12, n_out=5, divisor=DIVISOR, capacity=64,
                    timeout=100, clock_hz=10 ** 6, steps=8)
    assert not link.info.rate and link.info.rate_bits == 0 and link.info.pack()[-1] == 0
