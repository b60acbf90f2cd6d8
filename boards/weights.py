"""The host side of weights loaded at run time: find the board's layout, upload the image.

A board built with ``--weights load`` (:class:`hdl.top.Accelerator` ``weights="load"``) reports
:data:`~hdl.protocol.FLAG_WEIGHTS` and, as its ident, the layout ident of its weight store
(:attr:`hdl.wload.WeightStore.ident`): the network's shape, lanes and neuron parameters, not its
weights. :func:`weight_store` lays out a bundle's weights as that board holds them (or says why
it cannot), and :class:`LoadedBoardLink` uploads them with WEIGHTS frames before anything else;
from then on the board holds that bundle's network, and the link reports the bundle's ident,
so :func:`boards.host.run_samples` checks and runs it as on a board built for it.
"""
from __future__ import annotations

import dataclasses
import gc
import time
import warnings

from hdl import protocol
from hdl.protocol import Command, ProtocolError, Reply, bundle_ident, weights_frames

from .host import BoardLink, HostError

__all__ = ["LoadedBoardLink", "accelerator_for", "weight_store", "MAX_LANES"]

#: Lanes tried when matching a board's layout (the engines take at most 16).
MAX_LANES = 16


def accelerator_for(weights, board_name):
    """The accelerator factory ``(bundle, lanes) -> Accelerator`` of a board build:
    ``None`` (the default, ROM) for ``weights="rom"``; for ``"load"``, run-time weights, in
    the UP5K's four SPRAM blocks where the board has them."""
    if weights == "rom":
        return None
    if weights != "load":
        raise ValueError(f"Weights must be 'rom' or 'load', not {weights!r}")
    from hdl.wload import SPRAM_BLOCKS

    from .top import board
    spram = SPRAM_BLOCKS if board(board_name).family == "ice40" else 0

    def accelerator(bundle, lanes):
        from hdl.top import Accelerator
        return Accelerator(bundle, lanes=lanes, weights="load", spram=spram)
    return accelerator


def weight_store(bundle, ident):
    """The :class:`~hdl.wload.WeightStore` of ``bundle`` whose layout ident is ``ident``.

    The board does not say how many lanes it has; the layout of each lane count is tried in
    turn (the first is found in a second even for a 784-128-10 network). :class:`HostError`
    when the bundle cannot be loaded at run time or none matches.
    """
    from amaranth.hdl import UnusedElaboratable

    from hdl.top import Accelerator
    found = refused = None
    with warnings.catch_warnings():
        # The accelerators are built only for their layout, never elaborated: collected here,
        # where the warning about that is off (a refused one too, once its exception is gone).
        warnings.simplefilter("ignore", UnusedElaboratable)
        for lanes in range(1, MAX_LANES + 1):
            try:
                store = Accelerator(bundle, lanes=lanes, weights="load").weight_store
            except ValueError as exc:
                refused = str(exc)
                break
            if store.ident == ident:
                found = store
                break
        gc.collect()
    if refused is not None:
        raise HostError(f"Bundle cannot be loaded at run time: {refused}")
    if found is None:
        raise HostError(f"Board holds another network shape (layout ident 0x{ident:08x}; "
                        f"this bundle's differs at every lane count from 1 to {MAX_LANES}): "
                        f"the layers, input, neuron parameters and weight bits must be the "
                        f"board's; rebuild the board for this bundle")
    return found


class LoadedBoardLink(BoardLink):
    """A :class:`~boards.host.BoardLink` to a board that loads its weights at run time.

    :meth:`load_weights` uploads ``bundle``'s weights (WEIGHTS frames of ``chunk`` bytes, each
    answered before the next is sent); :meth:`info` is the board's INFO with ``bundle``'s
    ident once they are in. ``log`` gets a line when the upload is done.
    """
    def __init__(self, port, bundle, *, chunk=1024, log=None):
        super().__init__(port)
        self._bundle, self._chunk, self._log = bundle, chunk, log
        self._board_info = None
        self.weight_bytes = 0
        self.weight_seconds = None

    def board_info(self):
        """The board's own INFO (its layout ident)."""
        if self._board_info is None:
            self._board_info = protocol.Info.unpack(
                self.request(Command.INFO, expect=Reply.INFO))
        return self._board_info

    def load_weights(self):
        """Upload the bundle's weights; return the image size in bytes."""
        info = self.board_info()
        if not info.flags & protocol.FLAG_WEIGHTS:
            raise HostError("Board keeps its weights in ROM (it was not built with "
                            "--weights load): there are none to upload")
        store = weight_store(self._bundle, info.ident)
        image = store.image()
        start = time.monotonic()
        reply = b""
        for frame in weights_frames(info.ident, image, chunk=self._chunk):
            self._write(frame)
            code, reply = self._reader.read_frame()
            self._check(Command.WEIGHTS, code, reply, Reply.WEIGHTS)
        if len(reply) != protocol.WEIGHTS_REPLY:
            raise ProtocolError(f"WEIGHTS reply must have {protocol.WEIGHTS_REPLY} bytes, "
                                f"not {len(reply)}")
        written, whole = int.from_bytes(reply[:4], "little"), reply[4]
        if written != len(image) or not whole:
            raise HostError(f"Board took {written} of {len(image)} weight bytes and does not "
                            f"report the image whole")
        self.weight_bytes, self.weight_seconds = len(image), time.monotonic() - start
        self._info = dataclasses.replace(info, ident=bundle_ident(self._bundle))
        if self._log:
            self._log(f"weights: {len(image)} bytes in {self.weight_seconds:.2f} s "
                      f"(layout 0x{info.ident:08x}, {len(store.slots)} memories)")
        return len(image)

    def info(self):
        if self._info is None:
            raise HostError("Weights are not loaded yet: call load_weights() first")
        return self._info
