"""Greedy CTC decoding: the best label per frame, repeats merged, blanks removed."""

from __future__ import annotations

import numpy as np


def greedy_ctc(logits, lengths, blank_id: int) -> list[list[int]]:
    """logits f[N, T, K] (or log-probabilities), lengths i32[N] -> N label lists.

    Frames at or past ``lengths[n]`` are ignored; a label repeated on consecutive frames counts
    once unless a blank separates the repeats.
    """
    best = np.asarray(logits).argmax(-1)
    lengths = np.asarray(lengths)
    if best.ndim != 2 or lengths.shape != best.shape[:1]:
        raise ValueError(f"expected logits f[N, T, K] and lengths i32[N], got {np.shape(logits)} and {lengths.shape}")
    rows = []
    for path, length in zip(best, lengths):
        path = path[: int(length)]
        new = np.ones(len(path), bool)
        new[1:] = path[1:] != path[:-1]
        rows.append([int(label) for label in path[new] if label != blank_id])
    return rows
