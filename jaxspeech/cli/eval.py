"""``jaxspeech eval``: decode the evaluation sets with a training workdir's newest checkpoint (any task;
a text LM's workdir: its perplexity on held-out text).

  jaxspeech eval --workdir runs/tiny
  jaxspeech eval --workdir runs/tiny --beam 4 --max-examples 200
  jaxspeech eval --workdir runs/tiny --ctc-weight 0.5       # joint CTC/attention decoding
  jaxspeech eval --workdir runs/tiny --ctc-blank-penalty 1.0   # a weaker CTC blank in that rescoring
  jaxspeech eval --workdir runs/tiny --lexicon none         # without the run's word list
  jaxspeech eval --workdir runs/tiny --sets dev             # other sets than the config's data.eval_sets
  jaxspeech eval --workdir runs/tiny --decoders joint       # only some of eval.decoders (llm, ctc, joint)
  jaxspeech eval --workdir runs/ast --metrics bleu,exact_match   # other scores than the config's eval.metrics

Metrics (--metrics, eval.metrics): wer, cer (error rates after text normalisation), bleu (sacrebleu
corpus BLEU of the raw text, 0-100), exact_match (share of examples whose normalised hypothesis
equals the normalised reference) and transcript_echo (share of hypotheses within WER 0.5 of the
utterance's transcript ``text``: on a set that asks for something else, how often the model
transcribed instead). The reference is an example's ``target`` (the answer a prompted task trains
on: a translation, a question's answer) when it has one, else its ``text``.

Writes ``WORKDIR/eval/<set>[.<decoder>].jsonl`` (per-example reference, hypothesis and errors) and
prints a table per metric (test sets of the embedded corpus split into training voices and held-out
voice; with several decoders, their WERs side by side first). The options that change decoding
(--beam, --ctc-*, --lexicon) apply to the joint decoder (eval.generation), not to the LLM alone.
Reading never changes the run's checkpoints: a damaged newest one is reported and skipped.

Errors (exit 2): a workdir without a run's config.json (missing, not JSON, another
program's config.json); no checkpoint; no checkpoint that passes its
integrity check; a checkpoint that does not fit the run's config; a number flag out of range; an
unknown --metrics name.
"""

from __future__ import annotations

import argparse
import dataclasses

from jaxspeech.cli.arguments import number


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="WER/CER/BLEU/exact match of a training workdir's newest checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", required=True, help="a jaxspeech train workdir")
    parser.add_argument("--beam", type=number(int, 1), default=None, metavar="N", help="beam search with N beams")
    parser.add_argument(
        "--ctc-weight",
        type=number(float, 0, 1),
        default=None,
        metavar="W",
        help="joint CTC/attention decoding: weight of the CTC prefix score (0-1; needs a CTC head)",
    )
    parser.add_argument(
        "--ctc-candidates",
        type=number(int, 1),
        default=None,
        metavar="N",
        help="joint decoding: how many of its best tokens (by joint score, over the whole "
        "vocabulary) each row offers the search at every step",
    )
    parser.add_argument(
        "--ctc-blank-penalty",
        type=number(float),
        default=None,
        metavar="B",
        help="joint decoding: subtract B from the CTC blank logit (> 0 counters deleted labels)",
    )
    parser.add_argument(
        "--length-penalty",
        type=number(float),
        default=None,
        metavar="P",
        help="beam search ranks finished hypotheses by score / length**P (0: by score alone)",
    )
    parser.add_argument(
        "--lexicon",
        default=None,
        metavar="WORDS",
        help="decode only words of WORDS: a word-list file (one per line), a data set name whose "
        "transcripts give the words, or 'none' (default: the run's own eval.lexicon)",
    )
    parser.add_argument(
        "--sets",
        default=None,
        metavar="A,B",
        help="comma-separated data sets to decode (default: the run's data.eval_sets)",
    )
    parser.add_argument(
        "--decoders",
        default=None,
        metavar="A,B",
        help="comma-separated decoders of llm, ctc, joint (default: the run's eval.decoders)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        metavar="A,B",
        help="comma-separated scores of wer, cer, bleu, exact_match, transcript_echo (default: the run's eval.metrics)",
    )
    parser.add_argument("--max-examples", type=number(int, 1), default=None, help="decode at most this many per set")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxspeech.evals.metrics import PER_SET_METRICS
    from jaxspeech.evals.report import metric_tables
    from jaxspeech.recipes.config import metric_names
    from jaxspeech.recipes.evaluate import evaluate_run
    from jaxspeech.recipes.report import decoder_table, perplexity_table
    from jaxspeech.recipes.restore import restore

    metrics = None
    if args.metrics is not None:  # checked before the checkpoint is read
        metrics = metric_names(tuple(name.strip() for name in args.metrics.split(",") if name.strip()), "--metrics")
    run_, params, step = restore(args.workdir)
    generation = {}
    if args.beam:
        generation.update(method="beam" if args.beam > 1 else "greedy", num_beams=args.beam)
    for name in ("ctc_weight", "ctc_candidates", "ctc_blank_penalty", "length_penalty"):
        if getattr(args, name) is not None:
            generation[name] = getattr(args, name)
    changes = {"generation": dataclasses.replace(run_.eval.generation, **generation)}
    if args.lexicon is not None:
        changes["lexicon"] = None if args.lexicon == "none" else args.lexicon
    if args.max_examples:
        changes["max_examples"] = args.max_examples
    if args.decoders is not None:
        changes["decoders"] = tuple(name for name in args.decoders.split(",") if name)
    if metrics is not None:  # every set scored with these, whatever eval.set_metrics said
        changes.update(metrics=metrics, set_metrics={})
    run_.eval = dataclasses.replace(run_.eval, **changes)
    if args.sets:
        run_.data = dataclasses.replace(run_.data, eval_sets=tuple(name for name in args.sets.split(",") if name))
    scores = evaluate_run(run_, params, args.workdir, progress=not args.no_progress)
    print(f"checkpoint step {step}")
    if not run_.reads_audio:  # a text LM: perplexity on its held-out text
        print(perplexity_table({k.removesuffix(" PPL"): v for k, v in scores.items()}))
        return 0
    comparison = decoder_table(
        {k.removesuffix(" WER"): v for k, v in scores.items() if k.endswith(" WER")}, run_.eval.decoders
    )
    if comparison:
        print(comparison)
    for block in metric_tables(scores, PER_SET_METRICS):
        print(block)
    return 0
