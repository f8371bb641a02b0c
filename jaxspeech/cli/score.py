"""``jaxspeech score``: WER / CER / BLEU / exact match of hypotheses against references.

  jaxspeech score --pairs decoded.jsonl                      # {"id", "reference", "hypothesis"} per line
  jaxspeech score --references refs.txt --hypotheses hyps.txt --metric cer --normalizer basic
  jaxspeech score --pairs decoded.jsonl --spelling /ckpt/whisper-base --per-example scored.jsonl
  jaxspeech score --pairs answers.jsonl --metric exact_match    # share of normalised exact matches

Errors (exit 2): a missing input file; a --pairs line that is not a JSON object with 'reference'
and 'hypothesis'; --references without --hypotheses, or files of different line counts;
--spelling with a normalizer other than english.
"""

from __future__ import annotations

import argparse
import json

from jaxspeech.errors import MissingFileError, UsageError
from jaxspeech.evals.metrics import bleu, cer, exact_match, wer
from jaxspeech.evals.normalizer import EnglishTextNormalizer
from jaxspeech.evals.report import exact_match_table, wer_table, write_per_example_jsonl


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help="WER/CER/BLEU/exact match of hypotheses against references",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", help="JSONL with 'reference' and 'hypothesis' (and optional 'id') per line")
    source.add_argument("--references", help="text file, one reference per line (with --hypotheses)")
    parser.add_argument("--hypotheses", help="text file, one hypothesis per line")
    parser.add_argument("--metric", choices=("wer", "cer", "bleu", "exact_match"), default="wer")
    parser.add_argument(
        "--normalizer",
        choices=("english", "basic", "none"),
        default=None,
        help="default: english for WER, basic for CER and exact_match (BLEU scores raw text)",
    )
    parser.add_argument("--spelling", help="British->American mapping: a normalizer.json or a Whisper checkpoint dir")
    parser.add_argument("--per-example", help="write per-example JSONL here (WER/CER)")
    parser.add_argument("--name", default="test", help="row name in the Markdown table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ids, references, hypotheses = _read_pairs(args)
    if args.metric == "bleu":
        result = bleu(references, hypotheses)
        print(f"BLEU {result.score:.2f}  ({result.signature})")
        return 0
    normalizer = args.normalizer or ("english" if args.metric == "wer" else "basic")
    if args.spelling:
        if normalizer != "english":
            raise UsageError("--spelling", "applies to the english normalizer only")
        normalizer = EnglishTextNormalizer(args.spelling)
    if args.metric == "exact_match":
        print(exact_match_table({args.name: exact_match(references, hypotheses, normalizer=normalizer)}), end="")
        return 0
    score = wer if args.metric == "wer" else cer
    result = score(references, hypotheses, normalizer=normalizer, ids=ids)
    print(wer_table({args.name: result}), end="")
    if args.per_example:
        write_per_example_jsonl(args.per_example, result)
    return 0


def _read_pairs(args) -> tuple[list[str], list[str], list[str]]:
    if args.pairs:
        ids, references, hypotheses = [], [], []
        for line_number, line in enumerate(_lines(args.pairs), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                references.append(record["reference"])
                hypotheses.append(record["hypothesis"])
            except (ValueError, KeyError, TypeError) as e:
                raise UsageError(
                    f"{args.pairs}:{line_number}", f"expected a JSON object with 'reference' and 'hypothesis' ({e!r})"
                ) from e
            ids.append(str(record.get("id", len(ids))))
        return ids, references, hypotheses
    if not args.hypotheses:
        raise UsageError("--references", "needs --hypotheses")
    references, hypotheses = _lines(args.references), _lines(args.hypotheses)
    if len(references) != len(hypotheses):
        raise UsageError(args.references, f"has {len(references)} lines but {args.hypotheses} has {len(hypotheses)}")
    return [str(k) for k in range(len(references))], references, hypotheses


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise MissingFileError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(path, f"cannot be read as UTF-8 text ({e})") from None
