"""The open-vocabulary set of the main job's debug variant: its held-out words are in no training
transcript and in no lexicon that any of the run's decoders gets for it; a lexicon that holds them is
refused; the three decoders are the ones ``eval.decoders`` names."""

import dataclasses
import json
import os

import pytest

from jaxspeech.config_dict import load_config_file
from jaxspeech.corpus.sentences import open_vocab_words
from jaxspeech.recipes.build import build
from jaxspeech.recipes.config import EvalConfig
from jaxspeech.recipes.evaluate import check_open_vocab_lexicon
from jaxspeech.recipes.word_list import read_words
from jaxspeech.tasks.ctc_decoder import CTCDecoder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Builds or reads data/tiny_debug in the checkout, as test_speech_recipe.py does: one xdist worker.
pytestmark = pytest.mark.xdist_group("repo_data")


def _records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def run():
    os.chdir(REPO)
    return build(load_config_file(os.path.join(REPO, "configs", "tiny_asr.py:debug")), progress=False)


def test_open_vocab_words_in_no_training_transcript_and_no_decoder_lexicon(run):
    assert "open_vocab" in run.data.eval_sets
    held_out = open_vocab_words()
    open_vocab = _records(run.manifest("open_vocab"))
    in_set = {word for record in open_vocab for word in record["open_vocab_words"]}
    assert open_vocab and all(record["open_vocab_words"] for record in open_vocab) and in_set <= held_out
    for split in run.data.train + ("dev", "test"):
        assert not {w for record in _records(run.manifest(split)) for w in record["text"].split()} & held_out, split
    decoders = run.decoders()
    assert list(decoders) == ["llm", "ctc", "joint"]
    assert isinstance(decoders["ctc"].decoder, CTCDecoder)
    assert decoders["llm"].lexicon is None and decoders["llm"].decoder.lexicon is None
    assert decoders["llm"].decoder.generation.ctc_weight == 0 and decoders["llm"].decoder.generation.num_beams <= 4
    joint = decoders["joint"]
    assert joint.lexicon == "train" and joint.decoder.lexicon is run.lexicon() is not None
    assert not set(read_words(joint.lexicon, run.manifest)) & held_out
    for name, decoder in decoders.items():
        check_open_vocab_lexicon(run, run.manifest("open_vocab"), name, decoder.lexicon)


def test_a_lexicon_holding_open_vocab_words_is_refused(run, tmp_path):
    manifest = run.manifest("open_vocab")
    leaked = _records(manifest)[0]["open_vocab_words"][0]
    words = tmp_path / "words.txt"
    words.write_text("the\ncat\n" + leaked + "\n")
    with pytest.raises(ValueError, match=f"open-vocabulary set.*joint.*{leaked}"):
        check_open_vocab_lexicon(run, manifest, "joint", str(words))
    check_open_vocab_lexicon(run, run.manifest("test"), "joint", str(words))  # not an open-vocabulary set


def test_eval_decoders_are_checked():
    with pytest.raises(ValueError, match="eval.decoders"):
        EvalConfig(decoders=("llm", "beam"))
    with pytest.raises(ValueError, match="eval.decoders"):
        EvalConfig(decoders=("ctc", "ctc"))
    with pytest.raises(ValueError, match="llm_generation.*ctc_weight"):
        EvalConfig(llm_generation=dataclasses.replace(EvalConfig().llm_generation, ctc_weight=0.5))
