"""Token budgets of grid choices that change a clip's audio tokens: the reference's text budget kept
per bucket, the choice's own audio tokens (and chunk tags) added."""

import os

import pytest

from jaxspeech.config_dict import load_config_file
from jaxspeech.sweep.study import audio_tokens_per_bucket, keep_text_budget

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs/tiny_asr.py")
XATTN = os.path.join(REPO, "configs/cross_attention.py")


def test_audio_tokens_follow_the_encoder_connector_and_fusion():
    # Buckets (320, 400, 512, 768) log-mel frames; the encoder stacks 4 frames, the connector 4 more.
    assert audio_tokens_per_bucket(load_config_file(TINY)) == (20, 25, 32, 48)
    assert audio_tokens_per_bucket(load_config_file(XATTN)) == (0, 0, 0, 0)
    assert audio_tokens_per_bucket(load_config_file(os.path.join(REPO, "configs/hybrid.py"))) == (4, 5, 7, 10)


def test_choices_keep_the_reference_text_budget():
    choices = {
        "stack2": {"model.fusion": "decoder_only", "model.connector.stack": 2},
        "xattn": {"model.fusion": "cross_attention", "model.audio_positions": "sequential"},
        "hybrid_tags": {
            "model.fusion": "hybrid",
            "model.hybrid_pool": 5,
            "task.prompt.chunk_tags": True,
            "task.prompt.chunk_frames": 160,
        },
    }
    budgeted = keep_text_budget(choices, config=XATTN, reference=TINY)
    # tiny_asr's max_tokens (72, 88, 104, 128) hold (20, 25, 32, 48) audio tokens: text (52, 63, 72, 80).
    assert budgeted["stack2"]["data.pipeline.max_tokens"] == (52 + 40, 63 + 50, 72 + 64, 80 + 96)
    assert budgeted["xattn"]["data.pipeline.max_tokens"] == (52, 63, 72, 80)
    # ceil(audio / 5) pooled tokens and ceil(frames / 160) tags: (4 + 2, 5 + 3, 7 + 4, 10 + 5).
    assert budgeted["hybrid_tags"]["data.pipeline.max_tokens"] == (58, 71, 83, 95)
    assert budgeted["stack2"]["model.connector.stack"] == 2  # the choice's own keys are kept
    with pytest.raises(ValueError, match=r"choice 'stack2': buckets \(768,\) .* differ from \(320, 400, 512, 768\)"):
        keep_text_budget({"stack2": {"model.connector.stack": 2}}, config=f"{TINY}:debug", reference=TINY)
