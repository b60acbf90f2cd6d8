"""Train a spiking network on a data set (default: scikit-learn's 8x8 digits) and prune it.

The data sets, their fixed splits and their encoding are in :mod:`models.data`, as is the
checkpoint that :func:`models.data.save_checkpoint` writes from what :func:`train` returns.

Training has two phases on CPU, seeded (the same options and thread count give the same
checkpoint):

1. dense: ``epochs`` epochs of Adam on snnTorch's ``mse_count_loss`` (the correct class should
   fire on ``correct_rate`` of the steps, the others on ``incorrect_rate``; or, with
   ``loss="ce_count"``, ``ce_count_loss``, the cross-entropy of the spike counts), with the leak
   already snapped to its integer form (:func:`models.quantize.snap_leak`);
2. sparse: ``prune_epochs`` epochs of fine-tuning (Adam at half the rate) while magnitude
   pruning raises the weight sparsity to ``sparsity`` on a cubic schedule over the first half
   (Zhu and Gupta's gradual pruning), the second half fine-tuning the final mask. The sparsity
   is per layer (``prune_scope="layer"``; ``layer_sparsity`` gives named layers their own) or
   of all weights ranked together (``"global"``).

With ``qat_epochs``, the last that many epochs (of both phases together) are quantization-aware:
the forward pass uses the weights and biases rounded to the ``qat_bits``-bit grid that
:func:`models.quantize.quantize` will use (straight-through gradient,
:class:`models.quantize.FakeQuant`, whose biases also model the integer leak's mean rounding),
and the rounded values are written into the network at the end, so that the float network and
the exported integer one share their weights exactly.

A synapse feeding ``snn.Lapicque`` (input gain ``g = T/C``) starts from ``W / g`` and learns at
``lr / g`` (:func:`compensate_gain`), so that Lapicque and Leaky layers move their membranes
alike; the neuron model itself is snnTorch's, unchanged.

With ``augment_shift``, every epoch moves each training image by its own random offset of up
to that many pixels per axis before encoding (:func:`models.data.shift_images`); the test split
is never moved.

The training samples are re-encoded every epoch (a fresh rate-coding draw): the digits as one
draw per epoch, the 28x28 sets batch by batch (an encoded MNIST epoch would not fit in memory);
the test split is encoded with ``test_seed``, the same events :mod:`models.export` writes into
the bundle.
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch
from snntorch import functional as SF

from .data import (DATASET_INFO, ENCODE_CHUNK, TrainConfig, encode_split, evaluate_split,
                   load_split, shift_images)
from .nets import NetConfig, SpikingNet
from .quantize import (FakeQuant, bake_fake_quant, finish_pruning, gain_and_decay, prune_step,
                       snap_leak, weight_sparsity)

__all__ = ["train"]
@torch.no_grad()
def compensate_gain(net: SpikingNet):
    """Scale each synapse's initial weights by ``theta / g`` (``g``: its neuron's input gain,
    ``theta``: its threshold).

    ``snn.Lapicque`` multiplies its input by ``g = T/C`` (``1 - decay`` for R = 1, about 0.1
    for beta = 0.9); with PyTorch's default initialisation its membrane would barely move and
    training would crawl. Starting from ``W / g`` gives the same initial membrane dynamics as a
    Leaky layer. Likewise a threshold of 2 with inputs in [0, 1] and a fast decay can leave a
    whole network silent at initialisation, and a silent network does not learn (measured:
    Fashion-MNIST CSNN, beta 0.5, theta 2: 10.7 %, one spike per inference); ``theta * W``
    starts every threshold at the same membrane-to-threshold ratio (theta = 1 changes nothing).
    The learning rate is not scaled for the threshold, so the threshold still shapes training.
    Returns ``{name: g}``.
    """
    gains = {}
    for name, synapse in net.synapses.items():
        gains[name], _ = gain_and_decay(net.neurons[name])
        theta = float(net.neurons[name].threshold)
        for param in synapse.parameters():
            if theta == 1:
                param.div_(gains[name])          # as before thresholds were scaled: bit for bit
            else:
                param.mul_(theta / gains[name])
    return gains


def _cubic(step, steps, target):
    return target * (1 - (1 - step / steps) ** 3)


def train(ncfg: NetConfig, tcfg: TrainConfig, *, progress=None):
    """Train, prune and evaluate a network; return ``(net, metrics)``.

    ``progress`` is called with one line of text per epoch (default: print to stderr).
    """
    tcfg.check()
    if progress is None:
        def progress(line):
            print(line, file=sys.stderr, flush=True)
    shape = DATASET_INFO[tcfg.dataset]["shape"]
    if tuple(ncfg.in_shape) != shape:
        raise ValueError(f"Input shape must be {list(shape)} for the {tcfg.dataset} data set, "
                         f"not {list(ncfg.in_shape)}")
    torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    x_train, y_train, x_test, y_test = load_split(tcfg.dataset)
    if tcfg.train_samples:
        x_train, y_train = x_train[:tcfg.train_samples], y_train[:tcfg.train_samples]
    net = SpikingNet(ncfg)
    leaks = snap_leak(net, tcfg.leak, tcfg.frac_bits, tcfg.potential_bits)
    if tcfg.loss == "ce_count":
        loss_fn = SF.ce_count_loss()
    else:
        loss_fn = SF.mse_count_loss(correct_rate=tcfg.correct_rate,
                                    incorrect_rate=tcfg.incorrect_rate)
    y_train_t = torch.as_tensor(y_train)
    shuffle = torch.Generator().manual_seed(tcfg.seed)
    history = []
    started, cpu_started = time.perf_counter(), time.process_time()
    dense_metrics = None
    gains = compensate_gain(net)
    phases = [("dense", tcfg.epochs, tcfg.lr), ("prune", tcfg.prune_epochs, tcfg.lr / 2)]
    epoch_index = 0
    qat_from = tcfg.epochs + tcfg.prune_epochs - tcfg.qat_epochs
    fake = (FakeQuant(tcfg.qat_bits, tcfg.potential_bits, tcfg.leak, tcfg.frac_bits)
            if tcfg.qat_epochs else None)
    # Each layer's final sparsity: --sparsity, or its own from layer_sparsity.
    targets = {name: tcfg.sparsity for name in net.synapses}
    for name, value in tcfg.layer_sparsity:
        if name not in targets:
            raise ValueError(f"Layer sparsity names {name!r}, not a synapse layer of this "
                             f"network ({', '.join(net.synapses)})")
        targets[name] = value
    for phase, epochs, lr in phases:
        if epochs == 0:
            continue
        if phase == "prune":
            dense_metrics = evaluate_split(net, x_test, y_test, tcfg, tcfg.test_seed)
        # Adam moves every parameter by about lr per step whatever its gradient's scale; a
        # synapse behind an input gain g moves the membrane by g times that, so its learning
        # rate is lr / g (for Lapicque, g = T/C; for Leaky, g = 1).
        optimiser = torch.optim.Adam([{"params": list(net.synapses[name].parameters()),
                                       "lr": lr / gains[name]} for name in net.synapses], lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
        ramp = max(1, math.ceil(epochs / 2))
        for epoch in range(epochs):
            t0 = time.perf_counter()
            if phase == "prune" and max(targets.values()) > 0:
                if tcfg.prune_scope == "global":
                    prune_step(net, _cubic(min(epoch + 1, ramp), ramp, tcfg.sparsity), "global")
                else:
                    prune_step(net, {name: _cubic(min(epoch + 1, ramp), ramp, target)
                                     for name, target in targets.items()}, "layer")
            if fake is not None and epoch_index >= qat_from:
                net.fake_quant = fake
            net.train()
            epoch_seed = tcfg.seed * 100003 + epoch_index
            whole = ENCODE_CHUNK[tcfg.dataset] is None
            if whole:
                x_enc = encode_split(shift_images(x_train, tcfg.augment_shift, epoch_seed),
                                     tcfg, epoch_seed)
            order = torch.randperm(len(y_train), generator=shuffle)
            total, count = 0.0, 0
            for number, lo in enumerate(range(0, len(order), tcfg.batch)):
                idx = order[lo:lo + tcfg.batch]
                if whole:
                    x_batch = x_enc[:, idx]
                else:
                    batch_seed = epoch_seed * 2 ** 20 + number
                    x_batch = encode_split(shift_images(x_train[idx.numpy()],
                                                        tcfg.augment_shift, batch_seed),
                                           tcfg, batch_seed)
                out = net(x_batch)
                loss = loss_fn(out, y_train_t[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            schedule.step()
            test = evaluate_split(net, x_test, y_test, tcfg, tcfg.test_seed)
            entry = {"phase": phase, "epoch": epoch_index + 1, "loss": total / count,
                     "test_accuracy": test["accuracy"],
                     "spikes_per_inference": test["spikes_total_per_inference"],
                     "weight_sparsity": weight_sparsity(net, total=True),
                     "seconds": time.perf_counter() - t0}
            history.append(entry)
            epoch_index += 1
            progress(f"{phase} epoch {epoch + 1}/{epochs}: loss {entry['loss']:.4f}, "
                     f"test {100 * entry['test_accuracy']:.2f}%, "
                     f"{entry['spikes_per_inference']:.0f} spikes/inference, "
                     f"sparsity {entry['weight_sparsity']:.3f}, {entry['seconds']:.1f} s")
    finish_pruning(net)
    if fake is not None:
        net.fake_quant = None
        bake_fake_quant(net, fake)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    final = evaluate_split(net, x_test, y_test, tcfg, tcfg.test_seed)
    if dense_metrics is None:
        dense_metrics = final
    metrics = {
        "train_seconds": seconds, "train_cpu_seconds": cpu_seconds,
        "load_average": list(os.getloadavg()),
        "dataset": tcfg.dataset,
        "train_samples": len(y_train), "test_samples": len(y_test),
        "dense_accuracy": dense_metrics["accuracy"],
        "float_accuracy": final["accuracy"],
        "spikes_per_inference": final["spikes_per_inference"],
        "spikes_total_per_inference": final["spikes_total_per_inference"],
        "input_events_per_inference": final["input_events_per_inference"],
        "weight_sparsity": weight_sparsity(net),
        "weight_sparsity_total": weight_sparsity(net, total=True),
        "leak": {name: lk.to_json() for name, lk in leaks.items()},
        "history": history,
    }
    return net, metrics
