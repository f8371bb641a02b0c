"""Attention kernels: the XLA reference and Pallas flash attention."""
