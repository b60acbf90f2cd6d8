"""snnTorch side of the tool: bundles, the fixed-point golden model, training and export.

Importing :mod:`models`, :mod:`models.bundle` or :mod:`models.golden` needs numpy only; the
training and export modules import torch and snnTorch when they are used.
"""
