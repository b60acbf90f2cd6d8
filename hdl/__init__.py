"""Amaranth gateware of the sparsity-aware SNN accelerator. Never imports torch."""
