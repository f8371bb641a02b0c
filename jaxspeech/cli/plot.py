"""``jaxspeech plot``: learning-curve PNGs of a training workdir.

  jaxspeech plot runs/tiny                  # writes runs/tiny/plots/{loss,accuracy,learning_rate,...}.png
  jaxspeech plot runs/tiny --out figures/

Reads ``WORKDIR/metrics.jsonl`` (written by the trainer; for steps logged twice because a run was
resumed, the later record wins) and draws train and eval curves together: losses, token accuracy,
learning rate, WER and CER (any metric ending in ``wer`` / ``cer``, any case) and gradient norm,
each where logged.

Errors (exit 2): a workdir without metrics.jsonl, or one with nothing to plot.
"""

from __future__ import annotations

import argparse

from jaxspeech.train.plots import plot_learning_curves


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="learning-curve PNGs of a training workdir",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("workdir", help="training workdir holding metrics.jsonl")
    parser.add_argument("--out", default=None, help="output folder (default: WORKDIR/plots)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in plot_learning_curves(args.workdir, args.out):
        print(path)
    return 0
