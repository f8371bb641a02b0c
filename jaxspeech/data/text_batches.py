"""Batches of packed text for training a language model on text alone.

    pipeline = TextPipeline(texts, encode, rows=32, length=128)
    with pipeline.iterator() as batches:          # or pipeline.iterator(saved_state)
        batch = next(batches)                     # TextBatch of numpy arrays, [32, 128]
        state = batches.get_state()               # JSON-serialisable; store it in the checkpoint

``texts`` is a stream of strings: text ``n`` is ``texts[n]`` (the corpus's sentence generator;
``ShuffledPasses`` over text manifests (``ManifestTexts``); ``Interleaved`` streams; for held-out
text, a list with ``limit=len(list)``). Texts are encoded (``encode(text) -> ids``, begin and end
tokens included) and packed in stream order: a text goes into the current row if it fits, else
it starts the next row; a batch is done when a text would start a row past its last, and that
text opens the next batch. A text longer than a row is skipped and counted. The iterator's state is the index of the next text, so a resumed run
sees exactly the texts it would have seen.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Iterator, Sequence

import numpy as np

from jaxspeech.types import TextBatch

STATE_VERSION = 1


class ManifestTexts:
    """The ``text`` fields of JSONL manifests (``paths``, in order) as a random-access source."""

    def __init__(self, paths: Sequence[str]):
        self.paths = tuple(paths)
        self.texts: list[str] = []
        for path in self.paths:
            with open(path, encoding="utf-8") as f:
                for line_number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line).get("text")
                    except (json.JSONDecodeError, AttributeError):
                        raise ValueError(f"{path}:{line_number}: not a JSON record") from None
                    if not isinstance(text, str) or not text.strip():
                        raise ValueError(f"{path}:{line_number}: a text manifest record needs a non-empty 'text'")
                    self.texts.append(text)
        if not self.texts:
            raise ValueError(f"text manifests {list(self.paths)} hold no records")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> str:
        return self.texts[index]

    def __repr__(self) -> str:
        return f"ManifestTexts({list(self.paths)!r}, {len(self.texts)} texts)"


class ShuffledPasses:
    """Endless passes over a finite source of texts, each pass in its own random order (seeded by
    ``(seed, pass)``), as a random-access stream."""

    def __init__(self, texts, seed: int = 0):
        self.texts, self.seed = texts, seed
        self._orders: dict[int, np.ndarray] = {}

    def __getitem__(self, n: int) -> str:
        epoch, offset = divmod(int(n), len(self.texts))
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.texts))}
        return self.texts[int(self._orders[epoch][offset])]

    def __repr__(self) -> str:
        return f"ShuffledPasses({self.texts!r}, seed={self.seed})"


class Interleaved:
    """Text ``n`` of ``k`` streams taken in turn: ``streams[n % k][n // k]``."""

    def __init__(self, *streams):
        self.streams = streams

    def __getitem__(self, n: int) -> str:
        stream, index = n % len(self.streams), n // len(self.streams)
        return self.streams[stream][index]

    def __repr__(self) -> str:
        return f"Interleaved{self.streams!r}"


class Strided:
    """One host's share of a stream: text ``n`` is ``stream[n * count + index]``."""

    def __init__(self, stream, index: int, count: int):
        self.stream, self.index, self.count = stream, index, count

    def __getitem__(self, n: int) -> str:
        return self.stream[n * self.count + self.index]

    def __repr__(self) -> str:
        return f"Strided({self.stream!r}, {self.index}, {self.count})"


class TextPipeline:
    """Packed ``TextBatch``es of ``rows`` x ``length`` tokens from the stream ``texts`` (see the module
    docstring); ``limit`` ends it after that many texts (the last batch then partly padding)."""

    def __init__(
        self, texts, encode: Callable[[str], Sequence[int]], *, rows: int, length: int, limit: int | None = None
    ):
        if rows < 1 or length < 2:
            raise ValueError(f"text batches need rows >= 1 and length >= 2, got {rows} x {length}")
        self.texts, self.encode, self.rows, self.length, self.limit = texts, encode, rows, length, limit

    @property
    def fingerprint(self) -> str:
        """Names the stream and the batch shape (a saved position belongs to them)."""
        described = {"texts": repr(self.texts), "rows": self.rows, "length": self.length, "limit": self.limit}
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    def example_batch(self) -> TextBatch:
        """An all-padding batch of the pipeline's shape."""
        return TextBatch.padding(self.rows, self.length)

    def iterator(self, state: dict | None = None) -> "TextIterator":
        iterator = TextIterator(self)
        if state is not None:
            iterator.set_state(state)
        return iterator

    def __iter__(self) -> "TextIterator":
        return self.iterator()


class TextIterator(Iterator[TextBatch]):
    """Yields packed ``TextBatch``es; ``get_state`` / ``set_state`` resume exactly (module docstring)."""

    def __init__(self, pipeline: TextPipeline):
        self.pipeline = pipeline
        self.next_text = 0
        self.too_long = 0
        self._pending: tuple[int, list[int]] | None = None

    def _encoded(self, n: int) -> list[int]:
        if self._pending is not None and self._pending[0] == n:
            return self._pending[1]
        return list(self.pipeline.encode(self.pipeline.texts[n]))

    def __next__(self) -> TextBatch:
        p = self.pipeline
        total = p.limit
        if total is not None and self.next_text >= total:
            raise StopIteration
        batch = TextBatch.padding(p.rows, p.length)
        row, used, segment = 0, 0, 0
        while total is None or self.next_text < total:
            ids = self._encoded(self.next_text)
            if len(ids) > p.length:
                self.too_long += 1
                self.next_text += 1
                continue
            if used + len(ids) > p.length:
                row, used, segment = row + 1, 0, 0
                if row == p.rows:
                    self._pending = (self.next_text, ids)
                    break
            segment += 1
            span = slice(used, used + len(ids))
            batch.tokens[row, span] = ids
            batch.segment_ids[row, span] = segment
            batch.positions[row, span] = np.arange(len(ids))
            batch.loss_mask[row, used + 1 : used + len(ids)] = 1.0  # the first token has nothing before it
            used += len(ids)
            self.next_text += 1
        if not batch.segment_ids.any():
            raise StopIteration
        return batch

    def get_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "fingerprint": self.pipeline.fingerprint,
            "next_text": self.next_text,
            "too_long": self.too_long,
        }

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"text pipeline state version {state.get('version')!r}; this code reads {STATE_VERSION}")
        if state["fingerprint"] != self.pipeline.fingerprint:
            raise ValueError(
                f"text pipeline state was saved by a pipeline with other texts or batch shape "
                f"(fingerprint {state['fingerprint']}, this one {self.pipeline.fingerprint})"
            )
        self.next_text, self.too_long, self._pending = int(state["next_text"]), int(state["too_long"]), None

    def close(self) -> None:
        """Nothing to stop (the texts are packed in this thread); here for the pipeline interface."""

    def __enter__(self) -> "TextIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
