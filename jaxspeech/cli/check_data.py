"""``jaxspeech check-data``: decode and validate a dataset once, the way training will read it.

  jaxspeech check-data data/tiny/train.jsonl
  jaxspeech check-data --librispeech /data/LibriSpeech/dev-clean --buckets 500 1000 1500 3500
  jaxspeech check-data a.jsonl b.jsonl --workers 2 --report rejects.json

Runs one unshuffled epoch of the input pipeline (decode, validate, resample; no log-mel) with the
given buckets and frame budget, never stopping on bad examples, and prints how many examples were
delivered, every reject reason with counts and sample paths, and per bucket the number of batches
and the share of padded frames that hold audio. ``--report`` writes every reject (path, reason,
message) as JSON. Exit status 1 if anything was rejected.

Errors (exit 2): manifests and --librispeech both given or both missing; a manifest that does not
exist or is not JSON lines with the expected fields; a folder that is not LibriSpeech-shaped.
"""

from __future__ import annotations

import argparse
import collections
import json

from jaxspeech.cli.arguments import number
from jaxspeech.data.pipeline import DataPipeline, PipelineConfig
from jaxspeech.data.sources import LibriSpeechSource, ManifestSource
from jaxspeech.errors import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-data",
        help="decode and validate a dataset, count rejects per reason",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifests", nargs="*", help="JSONL manifests (concatenated)")
    parser.add_argument("--librispeech", default=None, help="a LibriSpeech-layout folder instead of manifests")
    parser.add_argument(
        "--buckets",
        type=number(int, 1),
        nargs="+",
        default=list(PipelineConfig.bucket_frames),
        help="bucket lengths in log-mel frames (100 per second)",
    )
    parser.add_argument(
        "--frame-budget", type=number(int, 1), default=PipelineConfig.frame_budget, help="padded frames per batch"
    )
    parser.add_argument("--workers", type=number(int, 0), default=0, help="worker processes")
    parser.add_argument("--report", default=None, help="write every reject to this JSON file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.manifests) == bool(args.librispeech):
        raise UsageError("--librispeech", "give either manifests or --librispeech, not both or neither")
    source = LibriSpeechSource(args.librispeech) if args.librispeech else ManifestSource(args.manifests)
    config = PipelineConfig(
        bucket_frames=tuple(args.buckets),
        frame_budget=args.frame_budget,
        num_workers=args.workers,
        shuffle=False,
        num_epochs=1,
        compute_features_on_host=False,
        max_bad_fraction=1.0,
    )
    pipeline = DataPipeline(source, config, process_index=0, process_count=1)
    batches, valid_frames, padded_frames = collections.Counter(), collections.Counter(), collections.Counter()
    rejects = []
    with pipeline.iterator() as iterator:
        for host_batch in iterator:
            lengths = host_batch.batch.feature_lengths
            batches[host_batch.bucket] += 1
            valid_frames[host_batch.bucket] += int(lengths.sum())
            padded_frames[host_batch.bucket] += lengths.size * config.bucket_frames[host_batch.bucket]
            rejects.extend(host_batch.rejects)
        stats = iterator.stats
    print(f"{source!r}: {stats['delivered']} of {stats['seen']} examples usable")
    for reason, count in sorted(stats["rejected"].items(), key=lambda kv: -kv[1]):
        print(f"  rejected {reason}: {count}, e.g. {stats['samples'][reason][0]}")
    for bucket, frames in enumerate(config.bucket_frames):
        if batches[bucket]:
            fill = valid_frames[bucket] / padded_frames[bucket]
            print(f"  bucket {frames:>5} frames: {batches[bucket]} batches, {fill:.0%} of padded frames hold audio")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(
                [
                    {
                        "example_id": r.example_id,
                        "id": r.id,
                        "path": r.path,
                        "reason": r.reason.value,
                        "message": r.message,
                    }
                    for r in rejects
                ],
                f,
                indent=1,
            )
    return 1 if rejects else 0
