"""Child process of the resume tests: restores a pipeline state and records the rest of the stream.

    python -m tests.data.resume_child '{"manifest": ..., "config": {...}, "state": ..., "output": ...}'

Writes {"ids": [[example ids of each step]...], "steps": [...], "stats": {...}} to ``output``.
"""

import json
import sys

from jaxspeech.data.pipeline import DataPipeline, PipelineConfig
from jaxspeech.data.sources import ManifestSource


def main(arguments: dict) -> None:
    config = PipelineConfig(**arguments["config"])
    pipeline = DataPipeline(ManifestSource(arguments["manifest"]), config, process_index=0, process_count=1)
    with open(arguments["state"]) as f:
        state = json.load(f)
    ids, steps = [], []
    with pipeline.iterator(state) as iterator:
        for host_batch in iterator:
            example_ids = host_batch.batch.example_ids
            ids.append(example_ids[example_ids >= 0].tolist())
            steps.append(host_batch.step)
        stats = iterator.stats
    with open(arguments["output"], "w") as f:
        json.dump({"ids": ids, "steps": steps, "stats": stats}, f)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
