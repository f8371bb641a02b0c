"""The decode step of a plan: the evaluation's generation program, compiled for the slice.

Evaluation decodes the longest eval bucket's batch with the config's method (``eval``) through
``decoding.speech.generate_from_audio`` (prefill, then one token at a time from a KV cache of the
prompt plus ``max_new_tokens`` slots). The plan compiles that program with the trained state's
parameters laid out as in training and the batch split over the batch axes, and reports its
per-chip memory. Whisper fine-tuning runs are not planned here (their generation differs).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence


from jaxspeech.decoding.speech import _generate_from_audio
from jaxspeech.plan.measure import placed_batch
from jaxspeech.plan.parts import SPEECH_LLM, PlannedRun
from jaxspeech.plan.search import SearchResult
from jaxspeech.sharding.mesh import activation_rules, make_mesh
from jaxspeech.train.state import build_layout
from jaxspeech.train.step import batch_shards
from jaxspeech.types import BatchShape


def plan_decode(run: PlannedRun, result: SearchResult, devices: Sequence, log: Callable[[str], None]) -> dict[str, Any]:
    """{"method", "batch", "max_new_tokens", "total_bytes", "compile_seconds"} of the decode step,
    or {"error": why} when it is not planned or does not compile."""
    if run.recipe != SPEECH_LLM:
        return {"error": "the decode step is planned for Speech-LLM runs only"}
    mesh = make_mesh(result.mesh, devices)
    rules = run.train.sharding_rules
    p = run.eval_pipeline
    index = max(range(len(p.bucket_frames)), key=lambda i: p.bucket_frames[i] * p.clips_per_row[i])
    shards = batch_shards(mesh, rules)
    rows = max(1, p.frame_budget // (p.bucket_frames[index] * p.clips_per_row[index]))
    rows = math.ceil(rows / shards) * shards
    shape = BatchShape(
        batch_size=rows,
        clips=p.clips_per_row[index],
        frames=p.bucket_frames[index],
        tokens=p.max_tokens[index],
        n_mels=p.n_mels,
    )
    batch = placed_batch(shape, mesh, rules)
    gen = run.eval.generation
    log(f"compiling the decode step ({gen.method}, batch {rows}) ...")
    start = time.perf_counter()
    try:
        layout = build_layout(run.task, batch, run.train.optimizer, mesh, rules)
        params = {"params": layout.abstract["params"]}
        with activation_rules(mesh, rules):
            lowered = _generate_from_audio.lower(
                run.model,
                params,
                batch.tokens,
                batch.segment_ids,
                batch.features,
                batch.feature_lengths,
                gen,
                None,
                run.task.lora,
                None,
            )
        stats = lowered.compile().memory_analysis()
    except Exception as error:  # a plan still reports the train step; the decode step says why it is missing
        return {"error": f"{type(error).__name__}: {str(error)[:300]}"}
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )
    return {
        "method": gen.method,
        "batch": rows,
        "frames": shape.frames,
        "max_new_tokens": gen.max_new_tokens,
        "total_bytes": total,
        "compile_seconds": time.perf_counter() - start,
    }
