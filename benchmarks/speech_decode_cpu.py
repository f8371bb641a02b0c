"""Speech-LLM decoding on CPU, as ``jaxspeech eval`` runs it, against transformers on the same model.

Reads a trained decoder-only run (``--workdir``, e.g. the main job's ``runs/tiny``) and its first
``--examples`` test utterances in the eval pipeline's batches (duration buckets, padding rows).
Three decoders:

* ``greedy`` and ``beam`` (the run's beam width, LLM scores only): ours is ``generate_from_audio``
  (encoder, splice, prefill, search, all jitted); the peer is the run's LLM exported to
  transformers (``export_hf_llm``) generating from the same audio prefix: our encoder's prompt
  embeddings, left-padded, into ``generate(inputs_embeds=...)`` (the embedding computation is
  timed with the peer). Tokens are asserted identical.
* ``eval``: the run's own eval setting (beam with joint CTC prefix scores and the lexicon, when it
  has them); transformers has no equivalent, so only our time is reported, with the WER.

Runs alternate (ours, peer) and the median of per-pair time ratios is reported (> 1: jaxspeech is
faster); compile time (the first call) separately.

  python -m benchmarks.speech_decode_cpu --workdir runs/tiny        # writes benchmarks/results/speech_decode_cpu.json
  python -m benchmarks.speech_decode_cpu --workdir runs/tiny --examples 16 --pairs 1   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from benchmarks.harness import alternating, best_torch_threads, machine_info, write_json
from jaxspeech.convert.hf_llm import export_hf_llm
from jaxspeech.decoding.speech import generate_from_audio, neutral_padding
from jaxspeech.evals.metrics import wer
from jaxspeech.models.speech_llm import SpeechLLM
from jaxspeech.recipes.restore import restore


def eval_batches(run, examples: int) -> list:
    """The eval pipeline's host batches over the first ``examples`` utterances of the first eval set
    (padding rows get a one-token prompt, as ``jaxspeech eval`` gives them)."""
    with run.eval_data(run.manifest(run.data.eval_sets[0]), examples).iterator() as batches:
        host_batches = list(batches)
    padded = []
    for host_batch in host_batches:
        segment_ids = np.array(host_batch.batch.segment_ids)
        segment_ids[np.asarray(host_batch.batch.weights) == 0, 0] = 1
        padded.append(
            dataclasses.replace(host_batch, batch=dataclasses.replace(host_batch.batch, segment_ids=segment_ids))
        )
    return padded


class Ours:
    """``generate_from_audio`` over the batches; ``__call__() -> list of token lists`` (real rows)."""

    def __init__(self, decoding, batches, gen, lexicon):
        self.config, self.params = decoding
        self.batches, self.gen, self.lexicon = batches, gen, lexicon

    def __call__(self) -> list[list[int]]:
        hypotheses = []
        for host_batch in self.batches:
            b = host_batch.batch
            out = generate_from_audio(
                self.config,
                self.params,
                b.tokens,
                b.segment_ids,
                b.features,
                b.feature_lengths,
                self.gen,
                lexicon=self.lexicon,
                active=np.asarray(b.weights) > 0,
            )
            tokens, lengths = jax.device_get((out.tokens, out.lengths))
            hypotheses += [tokens[m["row"], : lengths[m["row"]]].tolist() for m in host_batch.metadata]
        return hypotheses


class Peer:
    """transformers' ``generate`` on the prompt embeddings of our encoder and splice (left-padded)."""

    def __init__(self, config, params, batches, gen, directory: str):
        self.model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
        self.batches, self.gen = batches, gen
        model = SpeechLLM(config)

        def prompt_embeds(params, tokens, segment_ids, features, feature_lengths):
            tokens = neutral_padding(config, tokens, segment_ids)
            audio = model.apply(params, features, feature_lengths, method=SpeechLLM.encode_audio)
            return model.apply(params, tokens, audio, method=SpeechLLM.embed)

        self.prompt_embeds = jax.jit(prompt_embeds)
        self.params = params
        self.suppress = None if config.fusion == "cross_attention" else [config.placeholder_id]

    def __call__(self) -> list[list[int]]:
        hypotheses = []
        for host_batch in self.batches:
            b = host_batch.batch
            embeds = np.asarray(self.prompt_embeds(self.params, b.tokens, b.segment_ids, b.features, b.feature_lengths))
            rows = [m["row"] for m in host_batch.metadata]
            real = [np.nonzero(np.asarray(b.segment_ids[row]))[0] for row in rows]
            width = max(len(r) for r in real)
            padded = np.zeros((len(rows), width, embeds.shape[-1]), np.float32)
            mask = np.zeros((len(rows), width), np.int64)
            for i, (row, positions) in enumerate(zip(rows, real)):
                padded[i, width - len(positions) :] = embeds[row, positions]
                mask[i, width - len(positions) :] = 1
            gen = self.gen
            with torch.no_grad():
                out = self.model.generate(
                    inputs_embeds=torch.from_numpy(padded),
                    attention_mask=torch.from_numpy(mask),
                    max_new_tokens=gen.max_new_tokens,
                    num_beams=gen.num_beams if gen.method == "beam" else 1,
                    length_penalty=gen.length_penalty,
                    do_sample=False,
                    eos_token_id=list(gen.eos_ids),
                    pad_token_id=gen.pad_id,
                    suppress_tokens=self.suppress,
                )
            for row in out.tolist():
                ended = [i for i, t in enumerate(row) if t in gen.eos_ids]
                hypotheses.append(row[: ended[0] + 1] if ended else row)
        return hypotheses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a finished decoder-only jaxspeech train run")
    parser.add_argument("--examples", type=int, default=96, help="test utterances decoded per run")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--decoders", nargs="+", default=["greedy", "beam", "eval"], choices=["greedy", "beam", "eval"])
    parser.add_argument("--out", default="benchmarks/results/speech_decode_cpu.json")
    args = parser.parse_args()

    run, params, step = restore(args.workdir)
    model = getattr(run.kind, "model", None)
    if getattr(model, "fusion", None) != "decoder_only":
        raise SystemExit(
            f"--workdir must hold a decoder_only Speech-LLM run (transformers' peer takes an embedding "
            f"prefix); {args.workdir} is {getattr(model, 'fusion', type(run.kind).__name__)}"
        )
    if getattr(model, "audio_positions", "sequential") != "sequential" and set(args.decoders) - {"eval"}:
        raise SystemExit(
            f"{args.workdir} lays its rotary positions out by model.audio_positions={model.audio_positions!r}; "
            "transformers' generate counts positions sequentially, so only --decoders eval applies"
        )
    run_decoder = run.decoder()
    decoding = run_decoder.prepare(params)
    batches = eval_batches(run, args.examples)
    references = [m["text"] for b in batches for m in b.metadata]
    run_gen = run_decoder.generation
    results = {
        "benchmark": "Speech-LLM decoding of the eval pipeline's batches (encoder, prefill, search), CPU, float32",
        "machine": machine_info(),
        "load_average_start": os.getloadavg(),
        "workdir": args.workdir,
        "step": step,
        "examples": len(references),
        "batches": [int(b.batch.tokens.shape[0]) for b in batches],
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as directory:
        config, llm_params = decoding[0].llm, {"params": decoding[1]["params"]["llm"]}
        export_hf_llm(
            config, llm_params, directory, "qwen2" if config.qkv_bias and not config.attention_bias else "llama"
        )
        for name in args.decoders:
            if name == "eval":
                gen, lexicon = run_gen, run.lexicon()
            else:
                gen = dataclasses.replace(run_gen, method=name, ctc_weight=0.0)
                lexicon = None
            ours = Ours(decoding, batches, gen, lexicon)
            start = time.perf_counter()
            our_tokens = ours()
            compile_s = time.perf_counter() - start
            entry = {
                "decoder": name,
                "method": gen.method,
                "num_beams": gen.num_beams,
                "ctc_weight": gen.ctc_weight,
                "lexicon": lexicon is not None,
                "compile_plus_first_run_s": compile_s,
                "wer": wer(references, [run.tokenizer.decode(t) for t in our_tokens]).rate,
            }
            if name == "eval":
                times = []
                for _ in range(args.pairs):
                    start = time.perf_counter()
                    ours()
                    times.append(time.perf_counter() - start)
                entry.update(ours_median_s=float(np.median(times)), ours_s=times)
                print(
                    f"{name}: ours {entry['ours_median_s']:.2f} s, WER {entry['wer']:.3f} (first call {compile_s:.1f} s)",
                    flush=True,
                )
            else:
                peer = Peer(decoding[0], decoding[1], batches, gen, directory)
                threads = best_torch_threads(peer, repeats=1)
                peer_tokens = peer()
                if our_tokens != peer_tokens:
                    differ = [i for i, (a, b) in enumerate(zip(our_tokens, peer_tokens)) if a != b]
                    raise AssertionError(
                        f"{name}: {len(differ)} hypotheses differ from transformers', e.g. row "
                        f"{differ[0]}: ours {our_tokens[differ[0]]}, peer {peer_tokens[differ[0]]}"
                    )
                entry.update(
                    torch_threads=threads, tokens_identical=True, **alternating(ours, peer, pairs=args.pairs, warmup=0)
                )
                print(
                    f"{name}: ours {entry['ours_median_s']:.2f} s, transformers {entry['peer_median_s']:.2f} s, speed-up "
                    f"x{entry['speedup_median']:.2f} [{entry['speedup_min']:.2f}, {entry['speedup_max']:.2f}] "
                    f"(first call {compile_s:.1f} s), WER {entry['wer']:.3f}",
                    flush=True,
                )
            entry["load_average"] = os.getloadavg()
            results["runs"].append(entry)
    write_json(args.out, results)


if __name__ == "__main__":
    main()
