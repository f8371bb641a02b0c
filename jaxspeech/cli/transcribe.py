"""``jaxspeech transcribe``: speech to text with a Hugging Face Whisper checkpoint or a jaxspeech run.

  jaxspeech transcribe --whisper-dir ./whisper-base audio1.wav audio2.flac
  jaxspeech transcribe --whisper-dir ./whisper-small --language de --beam 4 --batch-size 16 talks/*.ogg
  jaxspeech transcribe --checkpoint runs/tiny recording.flac      # a run of jaxspeech train

A --checkpoint run decodes as its kind does: a Speech LLM with the run's eval setting (beam, CTC
weight, lexicon; --beam and --max-new-tokens change the search), a CTC encoder greedily with its CTC
head, a Whisper run with the Whisper model it exported (WORKDIR/whisper_hf).

The directory needs config.json, model.safetensors (or shards + index), generation_config.json and
tokenizer.json. Files are WAV/FLAC/OGG at any sample rate (resampled to 16 kHz, stereo mixed to
mono); audio longer than 30 s is transcribed in overlapping chunks whose tokens are merged (see
``jaxspeech.recipes.longform``). Prints ``path<TAB>transcript`` per file on stdout; a file that
cannot be read prints an error line naming it on stderr, the others still run, and the exit
status is 1.

Errors (exit 2): a --whisper-dir that is not a readable Whisper checkpoint (a missing, truncated
or mismatched file is named); a --checkpoint workdir without a run's config.json or without a checkpoint; a
number flag out of range.
"""

from __future__ import annotations

import argparse
import sys

import jax.numpy as jnp
from etils import epath
from tqdm import tqdm

from jaxspeech.cli.arguments import number
from jaxspeech.data.audio import load_audio
from jaxspeech.errors import AudioError
from jaxspeech.features.mel import SAMPLE_RATE
from jaxspeech.recipes.longform import WhisperTranscriber
from jaxspeech.tasks.whisper_seq2seq_kind import EXPORT_SUBDIR as WHISPER_EXPORT

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files with an HF Whisper checkpoint or a jaxspeech run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV/FLAC/OGG, any sample rate)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--whisper-dir", help="HF Whisper directory (config, safetensors, tokenizer)")
    source.add_argument(
        "--checkpoint",
        metavar="WORKDIR",
        help="a jaxspeech train workdir: Speech LLM, CTC encoder or Whisper run (newest checkpoint)",
    )
    parser.add_argument("--language", default="en", help="language code for multilingual checkpoints (default: en)")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    parser.add_argument(
        "--beam", type=number(int, 1), default=1, metavar="N", help="beam search with N beams (default: greedy)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=number(int, 1),
        default=None,
        help="tokens per chunk (default: 224 for Whisper, capped by the model; the run's eval setting "
        "for --checkpoint)",
    )
    parser.add_argument("--batch-size", type=number(int, 1), default=8, help="30-s chunks decoded together")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="compute dtype")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    whisper_dir = args.whisper_dir
    if args.checkpoint and epath.Path(args.checkpoint, WHISPER_EXPORT, "config.json").exists():
        whisper_dir = str(epath.Path(args.checkpoint, WHISPER_EXPORT))
    if whisper_dir is None:
        from jaxspeech.recipes.transcriber import RunTranscriber

        transcriber = RunTranscriber(
            args.checkpoint, num_beams=args.beam, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        )
    else:
        transcriber = WhisperTranscriber(
            whisper_dir,
            language=args.language,
            task=args.task,
            num_beams=args.beam,
            max_new_tokens=args.max_new_tokens or 224,
            batch_size=args.batch_size,
            dtype=_DTYPES[args.dtype],
        )
    failures = 0
    progress = tqdm(total=len(args.files), unit="file", disable=len(args.files) < 2, file=sys.stderr)
    for begin in range(0, len(args.files), args.batch_size):
        paths, audios = [], []
        for path in args.files[begin : begin + args.batch_size]:
            try:
                audios.append(load_audio(path, target_sample_rate=SAMPLE_RATE))
                paths.append(path)
            except AudioError as e:
                failures += 1
                progress.write(f"error: {e}", file=sys.stderr)
                progress.update(1)
        for path, text in zip(paths, transcriber.transcribe(audios)):
            progress.write(f"{path}\t{text}", file=sys.stdout)
            progress.update(1)
    progress.close()
    return 1 if failures else 0
