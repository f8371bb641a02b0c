import numpy as np
import pytest

from jaxspeech.decoding.ctc import greedy_ctc


def _one_hot(paths, vocab=5):
    return np.eye(vocab, dtype=np.float32)[np.asarray(paths)]


def test_repeats_merge_blanks_split_and_padding_is_ignored():
    # blank = 0: "1 1 0 1 2 2 0 3" -> [1, 1, 2, 3]; the second row stops after 3 frames.
    paths = [[1, 1, 0, 1, 2, 2, 0, 3], [4, 4, 0, 2, 2, 2, 2, 2]]
    assert greedy_ctc(_one_hot(paths), [8, 3], blank_id=0) == [[1, 1, 2, 3], [4]]


def test_blank_id_other_than_zero_and_empty_rows():
    paths = [[3, 3, 3, 3], [1, 3, 1, 1]]
    assert greedy_ctc(_one_hot(paths), [4, 0], blank_id=3) == [[], []]
    assert greedy_ctc(_one_hot(paths), [4, 4], blank_id=3) == [[], [1, 1]]


def test_shape_errors_name_the_expected_shapes():
    with pytest.raises(ValueError, match=r"f\[N, T, K\]"):
        greedy_ctc(np.zeros((4, 5)), [4], blank_id=0)
