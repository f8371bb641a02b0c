"""``jaxspeech prepare-data``: build a dataset on this machine, offline.

  jaxspeech prepare-data tiny                                  # ~12 h of synthetic speech in data/tiny
  jaxspeech prepare-data tiny --out /data/tiny --hours 6 --seed 1 --tokenizer-vocab 512
  jaxspeech prepare-data tiny --out /tmp/t --hours 0.05 --dev 20 --test 20 --held-out 10

``tiny`` is the embedded corpus: English sentences from a grammar of ~3,000 words spoken by
eSpeak NG voices at random rates and pitches (jaxspeech.corpus.utterances). It writes
{train,dev,test,open_vocab}/*.flac and .jsonl manifests (audio paths relative to the folder)
and corpus.json; re-running with the same arguments on a complete folder does nothing, and an
interrupted build is completed.

Errors (exit 2): a number flag out of range (--hours nan or negative, --noise-prob above 1, ...);
--out holding a corpus built with other settings, or other files (--overwrite replaces it); an
--out that is a file or cannot be created.
"""

from __future__ import annotations

import argparse

from jaxspeech.cli.arguments import folder_to_write, number

DATASETS = ("tiny",)


def register(subparsers) -> None:
    from jaxspeech.corpus.utterances import DEFAULT_CORPUS_DIR, CorpusConfig

    defaults = CorpusConfig()
    parser = subparsers.add_parser(
        "prepare-data",
        help="build the embedded synthetic speech corpus (offline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=DATASETS, help="which dataset to build")
    parser.add_argument(
        "--out", type=folder_to_write, default=DEFAULT_CORPUS_DIR, help=f"output folder (default: {DEFAULT_CORPUS_DIR})"
    )
    parser.add_argument("--hours", type=number(float, 0), default=defaults.train_hours, help="hours of training audio")
    parser.add_argument("--seed", type=number(int, 0), default=defaults.seed)
    parser.add_argument(
        "--dev", type=number(int, 0), default=defaults.dev_utterances, metavar="N", help="dev utterances"
    )
    parser.add_argument(
        "--test",
        type=number(int, 0),
        default=defaults.test_utterances,
        metavar="N",
        help="test utterances with the training voices",
    )
    parser.add_argument(
        "--held-out",
        type=number(int, 0),
        default=defaults.held_out_utterances,
        metavar="N",
        help=f"test utterances with the held-out voice ({defaults.held_out_voice})",
    )
    parser.add_argument(
        "--open-vocab",
        type=number(int, 0),
        default=defaults.open_vocab_utterances,
        metavar="N",
        help="open-vocabulary test utterances (words no other split has) with the training voices",
    )
    parser.add_argument(
        "--open-vocab-held-out",
        type=number(int, 0),
        default=defaults.open_vocab_held_out_utterances,
        metavar="N",
        help="open-vocabulary test utterances with the held-out voice",
    )
    parser.add_argument(
        "--noise-prob",
        type=number(float, 0, 1),
        default=defaults.noise_probability,
        help="fraction of utterances mixed with background noise (SNR %g-%g dB)" % defaults.snr_db,
    )
    parser.add_argument(
        "--tokenizer-vocab",
        type=number(int, 1),
        default=None,
        metavar="N",
        help="also train an N-piece sentencepiece model on the train text (DIR/tokenizer.model)",
    )
    parser.add_argument(
        "--workers", type=number(int, 1), default=None, help="synthesis processes (default: one per CPU)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete a corpus built with other settings in --out instead of refusing",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxspeech.corpus.utterances import CorpusConfig
    from jaxspeech.corpus.build import CORPUS_JSON, build_corpus, manifest_path
    from jaxspeech.corpus.sentences import SPLITS

    config = CorpusConfig(
        seed=args.seed,
        train_hours=args.hours,
        dev_utterances=args.dev,
        test_utterances=args.test,
        held_out_utterances=args.held_out,
        open_vocab_utterances=args.open_vocab,
        open_vocab_held_out_utterances=args.open_vocab_held_out,
        noise_probability=args.noise_prob,
    )
    summary = build_corpus(
        args.out,
        config,
        workers=args.workers,
        tokenizer_vocab=args.tokenizer_vocab,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    state = f"built in {summary.seconds:.1f} s" if summary.built else "already complete, nothing to do"
    print(f"corpus {summary.out_dir.resolve()}: {state}")
    for split in SPLITS:
        held_out = summary.held_out_counts[split]
        extra = f" ({held_out} with held-out voice {config.held_out_voice})" if held_out else ""
        print(
            f"  {split:10s} {summary.counts[split]:6d} utterances  {summary.hours[split]:7.3f} h  "
            f"manifest {manifest_path(summary.out_dir, split)}{extra}"
        )
    print(f"  description {summary.out_dir / CORPUS_JSON}")
    if summary.tokenizer is not None:
        print(f"  tokenizer   {summary.tokenizer} ({args.tokenizer_vocab} pieces)")
    return 0
