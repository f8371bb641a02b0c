"""The report's decoder comparison and dormancy tables."""

import numpy as np

from jaxspeech.evals.metrics import wer
from jaxspeech.recipes.report import decoder_notes, decoder_table, dormancy_table


def test_decoder_table_puts_decoders_side_by_side_per_set_and_voice_group():
    right, half = wer(["a b"], ["a b"]), wer(["a b"], ["a c"])
    word = {
        "test/llm": half,
        "test/llm/train_voices": half,
        "test/llm/held_out_voice": right,
        "test/joint": right,
        "test/joint/train_voices": right,
        "open_vocab/llm": half,
        "dev": half,
    }
    table = decoder_table(word, ("llm", "ctc", "joint")).splitlines()
    assert table[0] == "| set | voices | utterances | LLM alone WER % | CTC head alone WER % | joint WER % |"
    assert table[2:] == [
        "| test | all | 1 | 50.00 | – | 0.00 |",
        "| test | training voices | 1 | 50.00 | – | 0.00 |",
        "| test | held-out voice | 1 | 0.00 | – | – |",
        "| open_vocab | all | 1 | 50.00 | – | – |",
    ]
    assert decoder_table({"test": half}, ()) == ""


def test_decoder_notes_say_when_the_ctc_head_sets_the_llms_positions():
    sequential = decoder_notes({"model": {"audio_positions": "sequential"}}, ("llm", "joint"))
    aligned = decoder_notes({"model": {"audio_positions": "ctc"}}, ("llm", "joint"))
    assert set(sequential) == set(aligned) == {"llm", "joint"}
    assert "CTC head's greedy path" not in sequential["llm"]
    assert aligned["llm"].startswith(sequential["llm"]) and "CTC head's greedy path" in aligned["llm"]
    assert aligned["joint"] == sequential["joint"]
    assert decoder_notes({}, ("ctc",)) == {"ctc": "greedy"}


def test_dormancy_table_spreads_its_rows_over_the_run():
    steps = np.arange(100, 2100, 100)
    log = {
        "dormancy/audio_text_rms_ratio": (steps, steps / 1000.0),
        "dormancy/attention_on_audio": (steps[::2], np.full(10, 0.25)),
        "train/loss": (steps, steps * 0.0),
    }
    rows = dormancy_table(log, rows=5).splitlines()
    assert rows[0] == "| step | audio/text embedding RMS | LLM attention on audio |"
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| 100", "| 600", "| 1100", "| 1500", "| 2000"]
    assert rows[2] == "| 100 | 0.100 | 0.250 |" and rows[-1] == "| 2000 | 2.000 | – |"
    assert dormancy_table({"train/loss": (steps, steps * 0.0)}) == ""
