# amaranth: UnusedElaboratable=no
"""Rate input drawn on the board: host side (boards/rate.py) and the whole chain in cosim."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from boards.build import host_link
from boards.cosim import cosimulate
from boards.host import HostError
from boards.rate import check_rate_board, rate_accelerator, rate_capacity, run_rate_samples
from hdl import protocol
from hdl.protocol import FLAG_BATCH, FLAG_RATE, FLAG_REPLAY, Info, bundle_ident
from models import golden, onboard
from models.bundle import load
from models.data import load_split

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "models/zoo/digits_mlp"


def rate_info(bundle, **change):
    info = Info(protocol.VERSION, 2, bundle.input.size, bundle.n_out, 256, 10 ** 6,
                bundle_ident(bundle), bundle.input.steps, FLAG_BATCH | FLAG_REPLAY | FLAG_RATE,
                4)
    return dataclasses.replace(info, **change)


def test_trained_digits_mlp_through_the_cosimulated_rate_board(tmp_path):
    """The real host driver sends seeds and 4-bit intensities of the first digits test images
    to the board link's Verilog (Icarus); every result equals the golden model on the spikes
    models/onboard.py draws, computed here apart from the host's own check."""
    samples, bits = 6, 4
    bundle = load(DIGITS)
    link = host_link(bundle, rate_accelerator(None, bits)(bundle, 1), divisor=4,
                     capacity=rate_capacity(bundle, bits), clock_hz=100_000_000, replay=True)
    result = cosimulate(link, DIGITS, tmp_path / "cosim", samples=samples)
    assert result["returncode"] == 0, result["output"]

    _, _, x_test, y_test = load_split("digits")
    q = onboard.quantize(np.asarray(x_test[:samples]).reshape(samples, -1), bits)
    events = onboard.rate_events(q, onboard.sample_seeds(1, samples), steps=25, bits=bits)
    trace = golden.run(bundle, golden.events_to_dense(events, samples, 25, 64))
    assert result["counts"] == golden.spike_counts(trace.output).tolist()
    assert result["predicted"] == golden.predict(trace.output).tolist()
    assert result["labels"] == [int(y) for y in y_test[:samples]]
    assert result["all_equal"] and result["mode"] == "batch-rate"
    # A sample is its seed (4 events) and its nonzero pixels, two bytes an event.
    k = 4
    assert result["events"] == [k + int((row > 0).sum()) for row in q]
    # The spikes it stands for would be two bytes each, every step.
    assert result["bytes_sent"] < sum(2 * len(events[events[:, 0] == s]) for s in
                                      range(samples)) / 5
    assert "link         batch-rate" in result["output"]


def test_capacity_holds_any_sample():
    bundle = load(DIGITS)
    assert rate_capacity(bundle, 4) == 256                 # 4 seed events + 64 addresses
    mnist = dataclasses.replace(bundle, input=dataclasses.replace(bundle.input, shape=(784,)))
    assert rate_capacity(mnist, 4) == 1024                 # 3 + 784
    direct = load(REPO / "models/zoo/mnist_mlp")
    with pytest.raises(ValueError, match=r"^--rate draws rate-coded input on the board: the "
                                         r"bundle's input is 'direct' encoded, not 'rate'$"):
        rate_capacity(direct, 4)


@pytest.mark.parametrize("change,message", [
    (dict(flags=FLAG_BATCH | FLAG_REPLAY, rate_bits=0),
     r"^Board does not draw rate input \(flags 0x03, rate bits 0\)$"),
    (dict(rate_bits=9), r"^Board does not draw rate input \(flags 0x0b, rate bits 9\)$"),
    (dict(steps=24), r"^Board was built for another network \(steps 24 != 25\): rebuild"),
    (dict(ident=5), r"^Board was built for another network \(ident 0x00000005 != 0x"),
    (dict(event_bytes=3), r"\(event bytes 3 != 2\)"),
    (dict(version=1), r"^Board speaks protocol version 1, this host 2$"),
])
def test_host_refuses_a_board_that_is_not_this_rate_board(change, message):
    bundle = load(DIGITS)
    check_rate_board(rate_info(bundle), bundle)          # the board built for it passes
    with pytest.raises(HostError, match=message):
        check_rate_board(rate_info(bundle, **change), bundle)


class ScriptedLink:
    """A link that answers INFO only: enough to reach the host's checks."""
    sent = received = 0

    def __init__(self, info):
        self._info = info

    def info(self):
        return self._info


def test_host_needs_the_images_the_bundle_was_trained_on(tmp_path):
    bundle = load(DIGITS)
    bundle.provenance = {**(bundle.provenance or {}), "dataset": "somewhere else"}
    with pytest.raises(HostError, match=r"^Rate input on the board: the bundle's data set "
                                        r"'somewhere else' is not one of "):
        run_rate_samples(ScriptedLink(rate_info(bundle)), bundle, samples=2)
    shuffled = load(DIGITS)
    shuffled.vectors.labels = (np.asarray(shuffled.vectors.labels) + 1) % 10
    with pytest.raises(HostError, match=r"^Rate input on the board: the vectors' labels are "
                                        r"not the first 2 of the sklearn digits test split$"):
        run_rate_samples(ScriptedLink(rate_info(shuffled)), shuffled, samples=2)



def test_seed_for_a_board_that_takes_spikes_is_refused(monkeypatch, capsys):
    """``boards run --seed`` against a board without rate input: one line, exit 1, before any
    sample is sent."""
    import boards.host
    from boards.__main__ import main
    from hdl.protocol import SYNC_REPLY, Reply, encode_frame
    from tests.boards.test_host_parse import ScriptedPort
    bundle = load(DIGITS)
    info = rate_info(bundle, flags=FLAG_BATCH, rate_bits=0)

    class Port(ScriptedPort):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    port = Port([encode_frame(Reply.INFO, info.pack(), sync=SYNC_REPLY)])
    monkeypatch.setattr(boards.host, "open_port", lambda *a, **k: port)
    assert main(["run", "--port", "x", "--bundle", str(DIGITS), "--seed", "3"]) == 1
    err = capsys.readouterr().err
    assert err == ("python -m boards run: error: --seed applies to a board built with --rate, "
                   "and this one takes spike events (INFO flags 0x01)\n")
    assert len(port.written) == 1                       # INFO only
