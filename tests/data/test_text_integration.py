"""The pipeline with the real text side: a trained sentencepiece tokenizer and ``encode_example``."""

import numpy as np
import pytest

from jaxspeech.data.pipeline import DataPipeline, PipelineConfig
from jaxspeech.data.sources import ManifestSource
from jaxspeech.data.text import (
    AUDIO_PLACEHOLDER,
    WHISPER_ENCODER,
    FrameStack,
    audio_token_count,
    encode_example,
    train_sentencepiece,
)


class AsrTokenize:
    """record + frames -> ``encode_example`` for ASR: Whisper-encoder stride 2, then frame stacking by 4."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.placeholder_id = tokenizer.token_to_id(AUDIO_PLACEHOLDER)

    def counts(self, frames_per_clip):
        return [
            audio_token_count(f, encoder_downsample=WHISPER_ENCODER, connector=FrameStack(4)) for f in frames_per_clip
        ]

    def __call__(self, record, frames_per_clip):
        return encode_example(
            self.tokenizer,
            instruction="asr",
            audio_token_counts=self.counts(frames_per_clip),
            placeholder_id=self.placeholder_id,
            target=record["text"],
        )


@pytest.fixture(scope="module")
def asr_tokenize(tmp_path_factory):
    texts = [f"utterance {i}" for i in range(48)] + ["transcribe the audio"]
    tokenizer = train_sentencepiece(
        texts * 10, vocab_size=60, out_path=tmp_path_factory.mktemp("sp") / "sp.model", hard_vocab_limit=False
    )
    return AsrTokenize(tokenizer)


def test_pipeline_with_encode_example(small_manifest, asr_tokenize):
    config = PipelineConfig(
        bucket_frames=(100, 200), frame_budget=800, max_tokens=(60, 80), clips_per_row=(2, 1), n_mels=16, num_epochs=1
    )
    pipeline = DataPipeline(
        ManifestSource(small_manifest), config, tokenize=asr_tokenize, process_index=0, process_count=1
    )
    delivered = 0
    with pipeline.iterator() as iterator:
        for host_batch in iterator:
            batch = host_batch.batch
            for entry in host_batch.metadata:
                row, clip = entry["row"], entry["clip"]
                frames = int(batch.feature_lengths[row, clip])
                segment = batch.segment_ids[row] == clip + 1
                tokens = batch.tokens[row, segment]
                expected = asr_tokenize(entry, (frames,))
                np.testing.assert_array_equal(tokens, expected.tokens)
                assert (tokens == asr_tokenize.placeholder_id).sum() == asr_tokenize.counts([frames])[0]
                targets = tokens[batch.loss_mask[row, segment] > 0]
                assert asr_tokenize.tokenizer.decode(targets.tolist()) == entry["text"]
                delivered += 1
        stats = iterator.stats
    assert delivered == 48 and stats["rejected"] == {}, stats
