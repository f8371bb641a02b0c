"""Input-pipeline throughput on CPU: jaxspeech's Grain pipeline vs a torch ``DataLoader``.

Both sides do the same work per example: read a 22.05 kHz FLAC with soundfile, mix to mono,
resample to 16 kHz with soxr (HQ), compute an 80-bin Whisper log-mel (ours: numpy,
``jaxspeech.features.mel``; peer: ``whisper.log_mel_spectrogram``, torch STFT) and pad into the
same bucketed batches (the peer's batch sampler replays our plan), with the same number of worker
processes and the same prefetch depth (2 batches per worker; ours without reader threads, so that
with 0 workers both sides are fully synchronous). Throughput is steady state: iterators are started
once (time to the first batch, i.e. worker start-up, is reported separately) and calls alternate
between the two sides (``benchmarks.harness.alternating``). While one side is timed, the other's
workers refill their prefetch buffers, so each call first drains what it finds buffered (untimed,
not counted) and then times ``--batches`` batches produced at the steady rate. ``speedup_*`` are
per-pair ratios of those steady-state rates (> 1: ours is faster); rates are also given in audio
seconds per second, to compare with what training consumes.

  python -m benchmarks.data_cpu                      # full run -> benchmarks/results/data_cpu.json
  python -m benchmarks.data_cpu --smoke --out /tmp/data_cpu_smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import soundfile as sf
import soxr
import threadpoolctl
import torch
import whisper

from benchmarks.harness import alternating, best_torch_threads, machine_info, timed, write_json
from jaxspeech.data.audio import load_audio
from jaxspeech.data.pipeline import DataPipeline, PipelineConfig
from jaxspeech.data.sources import ManifestSource
from jaxspeech.features import mel

SOURCE_RATE = 22050  # eSpeak's native rate: every file is resampled
BUCKETS = (200, 400, 600)  # frames: clips of 1-6 s
PREFETCH = 2  # batches buffered per worker, both sides


def speech_like(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """f32[N]: a harmonic source with a wandering pitch, syllable-rate envelope and breath noise."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    audio = 0.2 * envelope * voiced + 0.02 * rng.standard_normal(n)
    return audio.astype(np.float32)


def write_corpus(folder: str, count: int, seed: int = 0) -> tuple[str, float]:
    """``count`` clips of 1-5.9 s and their manifest; returns (manifest path, mean clip seconds)."""
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(count):
        audio = speech_like(float(rng.uniform(1.0, 5.9)), SOURCE_RATE, rng)
        path = os.path.join(folder, f"clip_{i:05d}.flac")
        sf.write(path, audio, SOURCE_RATE, subtype="PCM_16")
        entries.append({"id": str(i), "audio_filepath": path, "duration": len(audio) / SOURCE_RATE, "text": ""})
    manifest = os.path.join(folder, "bench.jsonl")
    with open(manifest, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    return manifest, float(np.mean([e["duration"] for e in entries]))


class PeerDataset(torch.utils.data.Dataset):
    """The usual PyTorch recipe: soundfile + soxr + Whisper's torch log-mel, one example per call."""

    def __init__(self, records: list[dict], n_mels: int):
        self.records, self.n_mels = records, n_mels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        audio, rate = sf.read(self.records[index]["audio_filepath"], dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        if rate != mel.SAMPLE_RATE:
            mono = soxr.resample(mono, rate, mel.SAMPLE_RATE, quality="HQ")
        features = whisper.log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(mono)), self.n_mels)
        return features.T.contiguous(), index


class PlanSampler(torch.utils.data.Sampler):
    """Replays our pipeline's plan: the same examples in the same batches, forever."""

    def __init__(self, plan):
        self.plan = plan

    def __iter__(self):
        step = 0
        while True:
            yield list(self.plan.step(step).example_ids)
            step += 1


def collate_to_bucket(items):
    frames = max(f.shape[0] for f, _ in items)
    bucket = next(b for b in BUCKETS if b >= frames)
    features = torch.zeros(len(items), bucket, items[0][0].shape[1])
    lengths = torch.zeros(len(items), dtype=torch.int32)
    for row, (f, _) in enumerate(items):
        features[row, : f.shape[0]] = f
        lengths[row] = f.shape[0]
    return features, lengths, torch.tensor([i for _, i in items])


class Consumer:
    """Per call: drains ``drain`` buffered batches, then times ``count`` batches of the iterator."""

    def __init__(self, iterator, count: int, drain: int):
        self.iterator, self.count, self.drain = iterator, count, drain
        self.calls: list[tuple[float, int, float]] = []  # (seconds, examples, audio seconds)

    def __call__(self):
        for _ in range(self.drain):
            next(self.iterator)
        start = time.perf_counter()
        examples, audio_seconds = 0, 0.0
        for _ in range(self.count):
            n, seconds = self.count_batch(next(self.iterator))
            examples += n
            audio_seconds += seconds
        self.calls.append((time.perf_counter() - start, examples, audio_seconds))

    def rates(self, skip: int) -> dict:
        measured = self.calls[skip:]
        elapsed = sum(c[0] for c in measured)
        return {
            "examples_per_s": sum(c[1] for c in measured) / elapsed,
            "audio_seconds_per_s": sum(c[2] for c in measured) / elapsed,
        }


class OursConsumer(Consumer):
    @staticmethod
    def count_batch(host_batch):
        lengths = host_batch.batch.feature_lengths
        return int((host_batch.batch.example_ids >= 0).sum()), float(lengths.sum()) * mel.HOP_LENGTH / mel.SAMPLE_RATE


class PeerConsumer(Consumer):
    @staticmethod
    def count_batch(batch):
        _, lengths, _ = batch
        return len(lengths), float(lengths.sum()) * mel.HOP_LENGTH / mel.SAMPLE_RATE


def best_blas_threads(run, repeats: int = 3) -> int:
    """Sets and returns numpy's BLAS thread count that runs ``run`` fastest (the counterpart of
    ``best_torch_threads`` for our main-process work; worker processes use one thread each)."""
    candidates = sorted({1, os.cpu_count() or 1})
    timings = {}
    for threads in candidates:
        threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
        run()
        timings[threads] = min(timed(run) for _ in range(repeats))
    best = min(timings, key=timings.get)
    threadpoolctl.threadpool_limits(limits=best, user_api="blas")
    return best


def first_batch_seconds(make_iterator):
    start = time.perf_counter()
    iterator = make_iterator()
    next(iterator)
    return iterator, time.perf_counter() - start


def run(workers: int, manifest: str, args) -> dict:
    source = ManifestSource(manifest)
    config = PipelineConfig(
        bucket_frames=BUCKETS,
        frame_budget=args.frame_budget,
        n_mels=80,
        num_workers=workers,
        num_epochs=None,
        seed=0,
        read_threads=0,
        prefetch=PREFETCH,
    )
    pipeline = DataPipeline(source, config, process_index=0, process_count=1)
    records = [source[i] for i in range(len(source))]
    loader = torch.utils.data.DataLoader(
        PeerDataset(records, 80),
        batch_sampler=PlanSampler(pipeline.plan),
        num_workers=workers,
        collate_fn=collate_to_bucket,
        prefetch_factor=PREFETCH if workers else None,
        persistent_workers=workers > 0,
    )
    ours_iterator, ours_start = first_batch_seconds(pipeline.iterator)
    peer_iterator, peer_start = first_batch_seconds(lambda: iter(loader))
    # At least what a side can buffer while the other runs: ours holds PREFETCH batches per worker in
    # the worker's queue and PREFETCH in the main process's interleave thread, plus one in progress.
    drain = workers * (2 * PREFETCH + 2)
    ours = OursConsumer(ours_iterator, args.batches, drain)
    peer = PeerConsumer(peer_iterator, args.batches, drain)
    call_times = alternating(ours, peer, pairs=args.pairs, warmup=args.warmup)
    ours_iterator.close()
    # Per pair: ratio of steady-state rates in the timed windows (the harness's own call times also
    # include the drain, whose cost depends on how full the buffers were).
    ratios = [
        (o_examples / o_seconds) / (p_examples / p_seconds)
        for (o_seconds, o_examples, _), (p_seconds, p_examples, _) in zip(
            ours.calls[args.warmup :], peer.calls[args.warmup :]
        )
    ]
    result = {
        "workers": workers,
        "drained_batches_per_call": drain,
        "time_to_first_batch_s": {"ours": ours_start, "peer": peer_start},
        "ours": ours.rates(args.warmup),
        "peer": peer.rates(args.warmup),
        "speedup_median": float(np.median(ratios)),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "call_times_including_drain": call_times,
    }
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--frame-budget", type=int, default=8_000)
    parser.add_argument("--batches", type=int, default=8, help="batches per timed call")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check that everything runs")
    parser.add_argument("--out", default="benchmarks/results/data_cpu.json")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.frame_budget, args.batches, args.pairs, args.warmup = 40, 3000, 2, 2, 1
    with tempfile.TemporaryDirectory() as folder:
        manifest, mean_seconds = write_corpus(folder, args.files)
        probe = PeerDataset([ManifestSource(manifest)[0]], 80)
        torch_threads = best_torch_threads(lambda: probe[0])  # main-process threads; workers use 1 each
        audio = load_audio(probe.records[0]["audio_filepath"])
        blas_threads = best_blas_threads(lambda: mel.log_mel_spectrogram(audio, 80))
        results = [run(w, manifest, args) for w in args.workers]
    write_json(
        args.out,
        {
            "benchmark": "data_cpu",
            "what": "examples/s of decode (FLAC 22.05 kHz) + soxr HQ resample + 80-bin log-mel + bucketed padding",
            "peer": "torch.utils.data.DataLoader, same work (soundfile, soxr, whisper.log_mel_spectrogram), same batches",
            "load_average_1min_at_end": os.getloadavg()[0],  # the benchmark's own load included
            "smoke": args.smoke,
            "files": args.files,
            "mean_clip_seconds": mean_seconds,
            "buckets_frames": BUCKETS,
            "frame_budget": args.frame_budget,
            "batches_per_call": args.batches,
            "main_process_threads": {"ours_blas": blas_threads, "peer_torch": torch_threads},
            "machine": machine_info(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
