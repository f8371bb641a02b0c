"""WER of a finished run's CTC head alone (greedy CTC on the encoder), beside the LLM's WER.

  python experiments/tiny_asr/ctc_probe.py runs/tiny [--set test] [--max-examples 200]

The CTC head reads the encoder states directly, so its WER measures the encoder; the run's
report.md measures encoder + connector + LLM. A CTC WER far below the LLM's says the LLM has not
yet learnt to read the audio it is given.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="a finished `jaxspeech train` run folder")
    parser.add_argument("--set", default="test", help="eval set name (default: test)")
    parser.add_argument("--max-examples", type=int, default=None)
    args = parser.parse_args()

    import jax

    from jaxspeech.decoding.ctc import greedy_ctc
    from jaxspeech.models.speech_llm import SpeechLLM
    from jaxspeech.recipes.evaluate import score
    from jaxspeech.recipes.restore import restore

    run, params, step = restore(args.workdir)
    model = SpeechLLM(run.kind.model)
    blank_id = run.kind.model.ctc_blank_id

    apply = jax.jit(lambda p, f, n: model.apply({"params": p}, f, n, method=SpeechLLM.ctc_from_features))
    manifest = run.manifest(args.set)
    pipeline = run.eval_data(manifest, args.max_examples)
    decoded = []
    with pipeline.iterator() as batches:
        for host_batch in batches:
            batch = host_batch.batch
            logits, lengths = apply(params, batch.features, batch.feature_lengths)
            clips = batch.features.shape[1]
            paths = greedy_ctc(logits, lengths, blank_id)
            for meta in host_batch.metadata:
                hypothesis = run.tokenizer.decode(paths[meta["row"] * clips])
                decoded.append(
                    {
                        **pipeline.source[meta["example_id"]],
                        "id": meta["id"],
                        "reference": meta["text"],
                        "hypothesis": hypothesis,
                    }
                )
    print(f"{args.workdir}, step {step}, greedy CTC on '{args.set}' ({len(decoded)} utterances):")
    for name, result in score(decoded, args.set).items():
        print(f"  {name:32s} {100 * result.rate:6.2f} %  ({result.counts.reference_length} reference {result.unit}s)")
    for row in decoded[:3]:
        print(f"  ref: {row['reference']}\n  hyp: {row['hypothesis']}")


if __name__ == "__main__":
    main()
