"""Whisper transcription on CPU: ``jaxspeech transcribe --whisper-dir`` vs transformers ``generate``.

The same checkpoint on both sides (default: a random-init whisper-base-sized model saved in the HF
layout, with the end token's embedding scaled so that transcripts end after a few dozen tokens as
real ones do; ``--whisper-dir`` takes real weights), the same clips (utterances of the embedded
corpus' test split, and one recording of more than 30 s made by concatenating them, which is cut
into overlapping 30-s windows), greedy and beam 4, at batch 1 and batch 8. Ours is
``WhisperTranscriber`` (log-mel, chunking, batched generation, merge); the peer cuts the same
windows, runs ``WhisperFeatureExtractor`` and ``generate`` on batches of up to the same size
(unpadded), and merges the windows' tokens with the same rule. Transcripts (token ids) are
asserted identical; torch runs at its best thread count; runs alternate and the median of
per-pair time ratios is reported (> 1: jaxspeech is faster). Compile time (the first call) is
reported separately. Last, a single short clip with ``--beam 4`` against greedy (both at the CLI's
default ``--batch-size 8``).

  python -m benchmarks.whisper_decode_cpu                     # writes benchmarks/results/whisper_decode_cpu.json
  python -m benchmarks.whisper_decode_cpu --pairs 2 --clips 2 --methods greedy --batches 1  # smoke run
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile

import numpy as np
import torch
import transformers

from benchmarks.harness import alternating, best_torch_threads, machine_info, timed, write_json
from jaxspeech.corpus.utterances import CorpusConfig, SyntheticUtterances
from jaxspeech.features.mel import SAMPLE_RATE
from jaxspeech.recipes.longform import WhisperTranscriber, chunk_windows, merge_chunks

MAX_NEW_TOKENS = 224
# whisper-base's special tokens (multilingual vocabulary of 51865 ids).
EOT, SOT, EN, TRANSLATE, TRANSCRIBE, NO_TIMESTAMPS = 50257, 50258, 50259, 50358, 50359, 50363


def _end_like(model, audios: list[np.ndarray], target: int) -> int:
    """The token whose first greedy occurrence in ``audios`` comes nearest ``target`` tokens on average."""
    features = transformers.WhisperFeatureExtractor()(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.no_grad():
        rows = model.generate(
            features.input_features, language="en", task="transcribe", max_new_tokens=3 * target, do_sample=False
        ).tolist()
    firsts = collections.defaultdict(list)
    for row in rows:
        first: dict[int, int] = {}
        for position, token in enumerate(row):
            first.setdefault(token, position)
        for token, position in first.items():
            firsts[token].append(position)
    everywhere = {t: np.mean(p) for t, p in firsts.items() if len(p) == len(rows) and t < EOT}
    return min(everywhere, key=lambda t: abs(everywhere[t] - target))


def random_checkpoint(directory: str, audios: list[np.ndarray], target_tokens: int, seed: int = 0) -> None:
    """A random-init whisper-base-sized model with its generation config and a word-level tokenizer.

    HF's init (std 0.02) with the decoder's final LayerNorm scaled by 10, so that the arg-max of the
    logits has a margin that float noise cannot flip. A random model never picks the end token by
    itself: its embedding becomes 1.01 x that of the token whose first greedy occurrence in
    ``audios`` comes after about ``target_tokens`` tokens, so transcripts end about as long as real
    ones. Timestamp ids (after ``<|notimestamps|>``) are suppressed."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    config = transformers.WhisperConfig(
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
        pad_token_id=EOT,
        bos_token_id=EOT,
        eos_token_id=EOT,
        decoder_start_token_id=SOT,
        begin_suppress_tokens=None,
    )
    torch.manual_seed(seed)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=SOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        bos_token_id=EOT,
        is_multilingual=True,
        lang_to_id={"<|en|>": EN},
        task_to_id={"translate": TRANSLATE, "transcribe": TRANSCRIBE},
        no_timestamps_token_id=NO_TIMESTAMPS,
        suppress_tokens=[SOT, *range(NO_TIMESTAMPS + 1, 51865)],
        begin_suppress_tokens=[220, EOT],
        max_length=448,
    )
    with torch.no_grad():
        model.model.decoder.layer_norm.weight *= 10.0
        embedding = model.model.decoder.embed_tokens.weight
        embedding[EOT] = 1.01 * embedding[_end_like(model, audios, target_tokens)]
    model.save_pretrained(directory)
    special = {
        EOT: "<|endoftext|>",
        SOT: "<|startoftranscript|>",
        EN: "<|en|>",
        TRANSLATE: "<|translate|>",
        TRANSCRIBE: "<|transcribe|>",
        NO_TIMESTAMPS: "<|notimestamps|>",
    }
    vocab = {special.get(i, f"w{i}"): i for i in range(51865)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(text, special=True) for text in special.values()])
    tokenizer.save(os.path.join(directory, "tokenizer.json"))


def corpus_clips(count: int, long_seconds: float) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` test utterances and one recording of > ``long_seconds`` s (utterances with 0.3-s pauses)."""
    utterances = SyntheticUtterances(CorpusConfig(), "test")
    clips = [utterances[i]["audio"] for i in range(count)]
    pause = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    parts, total, index = [], 0, count
    while total <= long_seconds * SAMPLE_RATE:
        audio = utterances[index]["audio"]
        parts += [audio, pause]
        total += len(audio) + len(pause)
        index += 1
    return clips, np.concatenate(parts)


class PeerTranscriber:
    """transformers' Whisper on the windows our transcriber cuts, merged by the same rule."""

    def __init__(self, directory: str, num_beams: int, batch_size: int, window: int, stride: int):
        self.model = transformers.WhisperForConditionalGeneration.from_pretrained(directory).eval()
        self.features = transformers.WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
        self.num_beams, self.batch_size, self.window, self.stride = num_beams, batch_size, window, stride
        self.end_ids = {self.model.generation_config.eos_token_id, self.model.generation_config.pad_token_id}

    def _decode(self, chunks: list[np.ndarray]) -> list[list[int]]:
        results = []
        for begin in range(0, len(chunks), self.batch_size):
            group = chunks[begin : begin + self.batch_size]
            inputs = self.features(group, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            with torch.no_grad():
                out = self.model.generate(
                    inputs,
                    language="en",
                    task="transcribe",
                    num_beams=self.num_beams,
                    do_sample=False,
                    max_new_tokens=MAX_NEW_TOKENS,
                )
            results += [[t for t in row if t not in self.end_ids] for row in out.tolist()]
        return results

    def transcribe_tokens(self, audios: list[np.ndarray]) -> list[list[int]]:
        spans, chunks = [], []
        for audio in audios:
            windows = chunk_windows(len(audio), self.window, self.stride)
            spans.append((len(chunks), len(chunks) + len(windows)))
            chunks += [audio[start:end] for start, end in windows]
        decoded = self._decode(chunks)
        return [merge_chunks(decoded[first:last]) for first, last in spans]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whisper-dir", help="an HF Whisper directory (default: a random whisper-base-sized model)")
    parser.add_argument("--target-tokens", type=int, default=48, help="about where the random model's transcripts end")
    parser.add_argument("--clips", type=int, default=6, help="short corpus clips (plus one long recording)")
    parser.add_argument("--long-seconds", type=float, default=35.0, help="the long recording lasts more than this")
    parser.add_argument("--methods", nargs="+", default=["greedy", "beam4"], choices=["greedy", "beam4"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/whisper_decode_cpu.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        clips, long_recording = corpus_clips(args.clips, args.long_seconds)
        directory = args.whisper_dir
        if directory is None:
            directory = scratch
            random_checkpoint(directory, clips, args.target_tokens)
        audios = clips + [long_recording]
        results = {
            "benchmark": "Whisper transcription (log-mel, 30-s windows, generate, merge), CPU, float32",
            "machine": machine_info(),
            "load_average_start": os.getloadavg(),
            "checkpoint": args.whisper_dir
            or f"random whisper-base-sized (transcripts end near {args.target_tokens} tokens)",
            "clips_seconds": [round(len(a) / SAMPLE_RATE, 2) for a in audios],
            "max_new_tokens": MAX_NEW_TOKENS,
            "runs": [],
        }
        for method in args.methods:
            beams = 4 if method == "beam4" else 1
            for batch in args.batches:
                ours = WhisperTranscriber(directory, num_beams=beams, batch_size=batch, max_new_tokens=MAX_NEW_TOKENS)
                peer = PeerTranscriber(directory, beams, batch, ours.window, ours.stride)
                compile_s = timed(lambda: ours.transcribe_tokens(audios))
                threads = best_torch_threads(lambda: peer.transcribe_tokens(audios[:1]), repeats=1)
                our_tokens, peer_tokens = ours.transcribe_tokens(audios), peer.transcribe_tokens(audios)
                if our_tokens != peer_tokens:
                    raise AssertionError(
                        f"{method} batch {batch}: transcripts differ\nours {our_tokens}\npeer {peer_tokens}"
                    )
                timing = alternating(
                    lambda: ours.transcribe_tokens(audios),
                    lambda: peer.transcribe_tokens(audios),
                    pairs=args.pairs,
                    warmup=0,
                )
                run = {
                    "method": method,
                    "batch": batch,
                    "compile_plus_first_run_s": compile_s,
                    "torch_threads": threads,
                    "transcripts_identical": True,
                    "tokens": [len(t) for t in our_tokens],
                    **timing,
                    "load_average": os.getloadavg(),
                }
                results["runs"].append(run)
                print(
                    f"{method} batch {batch}: ours {run['ours_median_s']:.2f} s, transformers {run['peer_median_s']:.2f}"
                    f" s, speed-up x{run['speedup_median']:.2f} [{run['speedup_min']:.2f}, {run['speedup_max']:.2f}] "
                    f"(first call {compile_s:.1f} s; tokens {run['tokens']})",
                    flush=True,
                )

        # One short clip at the CLI's defaults: --beam 4 against greedy.
        greedy = WhisperTranscriber(directory, num_beams=1, max_new_tokens=MAX_NEW_TOKENS)
        beam = WhisperTranscriber(directory, num_beams=4, max_new_tokens=MAX_NEW_TOKENS)
        one = clips[:1]
        (greedy_tokens,), (beam_tokens,) = greedy.transcribe_tokens(one), beam.transcribe_tokens(one)
        timing = alternating(
            lambda: beam.transcribe_tokens(one), lambda: greedy.transcribe_tokens(one), pairs=args.pairs, warmup=0
        )
        ratio = 1 / timing["speedup_median"]
        # A random checkpoint's beam can keep a hypothesis open to max_new_tokens where greedy ends
        # early: the time per generated token (the encoder's share included) compares the searches'
        # cost apart from that.
        per_token = ratio * len(greedy_tokens) / max(len(beam_tokens), 1)
        results["single_clip_beam4_over_greedy"] = {
            "clip_seconds": round(len(one[0]) / SAMPLE_RATE, 2),
            "beam4_median_s": timing["ours_median_s"],
            "greedy_median_s": timing["peer_median_s"],
            "beam4_tokens": len(beam_tokens),
            "greedy_tokens": len(greedy_tokens),
            "ratio_median": ratio,
            "ratio_per_token": per_token,
            "goal": 2.0,
        }
        print(
            f"one {len(one[0]) / SAMPLE_RATE:.1f}-s clip: beam 4 {timing['ours_median_s']:.2f} s "
            f"({len(beam_tokens)} tokens), greedy {timing['peer_median_s']:.2f} s ({len(greedy_tokens)} tokens): "
            f"x{ratio:.2f} of greedy, x{per_token:.2f} per token",
            flush=True,
        )
    results["goal"] = {"speedup": 1.5, "single_clip_beam4_over_greedy": 2.0}
    write_json(args.out, results)


if __name__ == "__main__":
    main()
