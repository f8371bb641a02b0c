"""Batched, KV-cached, jit-compiled decoding: greedy, sampling and beam search."""
