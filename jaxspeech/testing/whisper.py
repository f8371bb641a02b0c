"""Small random-init Whisper models, directories and inputs shared by the Whisper tests (no downloads).

``micro``: d_model 64, 2+2 layers, 50 encoder positions (100 input frames = 1 s of audio), a
100-token vocabulary whose last ids are Whisper's special tokens (so no id lies past
``<|notimestamps|>``, which HF would read as a timestamp). Weights are drawn with a large std
(0.5) so that greedy outputs depend on the audio and the top-2 logits are well separated.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

from jaxspeech.features.mel import HOP_LENGTH, log_mel_spectrogram

PAD, EOS, SOT, EN, DE, TRANSLATE, TRANSCRIBE, NO_TIMESTAMPS = range(92, 100)
SPECIAL_TOKENS = {
    PAD: "<|pad|>",
    EOS: "<|endoftext|>",
    SOT: "<|startoftranscript|>",
    EN: "<|en|>",
    DE: "<|de|>",
    TRANSLATE: "<|translate|>",
    TRANSCRIBE: "<|transcribe|>",
    NO_TIMESTAMPS: "<|notimestamps|>",
}
MICRO_FRAMES = 100
MICRO_SAMPLES = MICRO_FRAMES * HOP_LENGTH


def micro_hf_config(init_std: float = 0.5) -> WhisperConfig:
    return WhisperConfig(
        vocab_size=100,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        decoder_layers=2,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=MICRO_FRAMES // 2,
        max_target_positions=40,
        pad_token_id=PAD,
        bos_token_id=EOS,
        eos_token_id=EOS,
        decoder_start_token_id=SOT,
        init_std=init_std,
        begin_suppress_tokens=None,
    )


def micro_generation_config() -> GenerationConfig:
    return GenerationConfig(
        decoder_start_token_id=SOT,
        eos_token_id=EOS,
        pad_token_id=PAD,
        bos_token_id=EOS,
        is_multilingual=True,
        lang_to_id={"<|en|>": EN, "<|de|>": DE},
        task_to_id={"translate": TRANSLATE, "transcribe": TRANSCRIBE},
        no_timestamps_token_id=NO_TIMESTAMPS,
        suppress_tokens=[1, 2, 3, SOT],
        begin_suppress_tokens=[4, EOS],
        max_length=40,
    )


def micro_hf_model(seed: int = 1, eos_scale: float = 1.2) -> WhisperForConditionalGeneration:
    """Random micro Whisper; the end token's embedding is scaled so that some rows stop early."""
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(micro_hf_config()).eval()
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight[EOS] *= eos_scale
    model.generation_config = micro_generation_config()
    return model


def tiny_sized_hf_config() -> WhisperConfig:
    """whisper-tiny's architecture (d 384, 4+4 layers, 6 heads, 1500 positions, 51865 tokens)."""
    return WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=384,
        encoder_layers=4,
        encoder_attention_heads=6,
        decoder_layers=4,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
        max_source_positions=1500,
        max_target_positions=448,
    )


def base_sized_hf_config() -> WhisperConfig:
    """whisper-base's architecture (d 512, 6+6 layers, 8 heads)."""
    return WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=512,
        encoder_layers=6,
        encoder_attention_heads=8,
        decoder_layers=6,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        max_source_positions=1500,
        max_target_positions=448,
    )


def write_tokenizer(directory: str) -> None:
    """A word-level tokenizer.json: ids 0..91 are the words ``w0``..``w91``, then the special tokens."""
    vocab = {f"w{i}": i for i in range(PAD)}
    vocab.update({token: i for i, token in SPECIAL_TOKENS.items()})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(SPECIAL_TOKENS[i], special=True) for i in sorted(SPECIAL_TOKENS)])
    tokenizer.save(os.path.join(directory, "tokenizer.json"))


def save_micro_dir(model: WhisperForConditionalGeneration, directory: str) -> str:
    """An HF Whisper directory (config, safetensors, generation config, tokenizer) for ``model``."""
    model.save_pretrained(directory)
    write_tokenizer(directory)
    return directory


def random_audio(num_samples: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.RandomState(seed).randn(num_samples)).astype(np.float32)


def padded_features(audios: list[np.ndarray], window: int = MICRO_SAMPLES, n_mels: int = 80) -> np.ndarray:
    """f32[B, window // 160, n_mels]: log-mel of each waveform zero-padded to the window (Whisper's input)."""
    return np.stack([log_mel_spectrogram(np.pad(a, (0, window - len(a))), n_mels) for a in audios])
