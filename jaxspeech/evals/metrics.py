"""WER / CER (jiwer, after normalisation) with counts, BLEU (sacrebleu), exact match, transcript echo
(a task over-fitting score), and held-out perplexity.

Error counts are kept per example and summed, so a corpus WER is sum(S + D + I) / sum(N), never an
average of per-example rates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jiwer
import sacrebleu

from jaxspeech.evals.normalizer import BasicTextNormalizer, EnglishTextNormalizer

Normalizer = Callable[[str], str]


@dataclasses.dataclass(frozen=True)
class ErrorCounts:
    """Edit operations against a reference of ``reference_length`` words (or characters)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """errors / reference_length; 0 for an empty reference with no errors, inf with some."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


@dataclasses.dataclass(frozen=True)
class ExampleScore:
    id: str
    reference: str
    hypothesis: str
    reference_normalized: str
    hypothesis_normalized: str
    counts: ErrorCounts


@dataclasses.dataclass(frozen=True)
class ErrorRateResult:
    """Corpus counts (summed over examples) and the per-example scores. ``unit`` is "word" or "char"."""

    counts: ErrorCounts
    examples: list[ExampleScore]
    unit: str

    @property
    def rate(self) -> float:
        return self.counts.rate


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    """A language model's perplexity on held-out text: exp(``nll`` / ``tokens``), ``nll`` summed over
    the ``tokens`` predicted."""

    nll: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens)


@dataclasses.dataclass(frozen=True)
class BleuResult:
    score: float  # 0-100
    precisions: tuple[float, ...]
    brevity_penalty: float
    hypothesis_length: int
    reference_length: int
    signature: str


@dataclasses.dataclass(frozen=True)
class ExactMatchResult:
    """Which examples' normalised hypothesis equals their normalised reference (``matches``, one per
    id of ``ids``, in order)."""

    matches: tuple[bool, ...]
    ids: tuple[str, ...]

    @property
    def accuracy(self) -> float:
        """The share of examples matched (0 for none)."""
        return sum(self.matches) / len(self.matches) if self.matches else 0.0


@dataclasses.dataclass(frozen=True)
class TranscriptEchoResult:
    """Per example (``ids``), the WER of the hypothesis against the utterance's transcript
    (``transcript_wers``); an example echoes the transcript when that WER is below ``threshold``."""

    transcript_wers: tuple[float, ...]
    ids: tuple[str, ...]
    threshold: float

    @property
    def echoes(self) -> tuple[bool, ...]:
        return tuple(rate < self.threshold for rate in self.transcript_wers)

    @property
    def share(self) -> float:
        """The share of examples that echo their transcript (0 for none)."""
        return sum(self.echoes) / len(self.echoes) if self.echoes else 0.0


def get_normalizer(normalizer: str | Normalizer) -> Normalizer:
    """ "english" (default), "basic" (any language), "none", or a callable str -> str."""
    if callable(normalizer):
        return normalizer
    named = {"english": EnglishTextNormalizer, "basic": BasicTextNormalizer, "none": lambda: lambda s: s}
    if normalizer not in named:
        raise ValueError(f"unknown normalizer {normalizer!r}; expected one of {sorted(named)} or a callable")
    return named[normalizer]()


def wer(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    normalizer: str | Normalizer = "english",
    ids: Sequence[str] | None = None,
) -> ErrorRateResult:
    """Word error rate after ``normalizer``; ids default to "0", "1", ..."""
    return _error_rate(references, hypotheses, normalizer, ids, "word")


def cer(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    normalizer: str | Normalizer = "basic",
    ids: Sequence[str] | None = None,
) -> ErrorRateResult:
    """Character error rate after ``normalizer`` (spaces count as characters)."""
    return _error_rate(references, hypotheses, normalizer, ids, "char")


def bleu(
    references: Sequence[str], hypotheses: Sequence[str], *, tokenize: str = "13a", lowercase: bool = False
) -> BleuResult:
    """Corpus BLEU with one reference per hypothesis (sacrebleu defaults: 13a tokenisation, exp smoothing)."""
    _check_pairs(references, hypotheses)
    metric = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase)
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return BleuResult(
        score=result.score,
        precisions=tuple(result.precisions),
        brevity_penalty=result.bp,
        hypothesis_length=result.sys_len,
        reference_length=result.ref_len,
        signature=str(metric.get_signature()),
    )


def exact_match(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    normalizer: str | Normalizer = "basic",
    ids: Sequence[str] | None = None,
) -> ExactMatchResult:
    """Per example: does the hypothesis equal the reference after ``normalizer`` (default "basic":
    lower case, punctuation and symbols dropped, spaces collapsed; any language)?"""
    _check_pairs(references, hypotheses)
    ids = _check_ids(ids, references)
    normalize = get_normalizer(normalizer)
    matches = tuple(normalize(r) == normalize(h) for r, h in zip(references, hypotheses))
    return ExactMatchResult(matches=matches, ids=tuple(ids))


def transcript_echo(
    transcripts: Sequence[str],
    hypotheses: Sequence[str],
    *,
    threshold: float = 0.5,
    normalizer: str | Normalizer = "english",
    ids: Sequence[str] | None = None,
) -> TranscriptEchoResult:
    """Which hypotheses are (close to) their utterance's transcript: WER against it below ``threshold``.
    On a set whose instruction asks for something else (a rate, a colour, the last word), the share
    that do is how often the model transcribed instead of following the instruction."""
    rates = wer(transcripts, hypotheses, normalizer=normalizer, ids=ids)
    return TranscriptEchoResult(
        transcript_wers=tuple(e.counts.rate for e in rates.examples),
        ids=tuple(e.id for e in rates.examples),
        threshold=threshold,
    )


def _check_ids(ids: Sequence[str] | None, references: Sequence[str]) -> list[str]:
    """``ids`` as strings ("0", "1", ... when None), one per reference."""
    if ids is None:
        return [str(k) for k in range(len(references))]
    if len(ids) != len(references):
        raise ValueError(f"{len(ids)} ids for {len(references)} references: expected one id per example")
    return [str(i) for i in ids]


def _error_rate(references, hypotheses, normalizer, ids, unit) -> ErrorRateResult:
    _check_pairs(references, hypotheses)
    ids = _check_ids(ids, references)
    normalize = get_normalizer(normalizer)
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    total, examples = ErrorCounts(), []
    for k, (reference, hypothesis) in enumerate(zip(references, hypotheses)):
        ref_norm, hyp_norm = normalize(reference), normalize(hypothesis)
        counts = _counts(process, ref_norm, hyp_norm, unit)
        total += counts
        examples.append(
            ExampleScore(
                id=ids[k],
                reference=reference,
                hypothesis=hypothesis,
                reference_normalized=ref_norm,
                hypothesis_normalized=hyp_norm,
                counts=counts,
            )
        )
    return ErrorRateResult(counts=total, examples=examples, unit=unit)


def _counts(process, reference: str, hypothesis: str, unit: str) -> ErrorCounts:
    reference_length = len(reference.split()) if unit == "word" else len(reference)
    if reference_length == 0:  # all insertions; jiwer's character mode rejects empty references
        hypothesis_length = len(hypothesis.split()) if unit == "word" else len(hypothesis)
        return ErrorCounts(insertions=hypothesis_length)
    out = process(reference, hypothesis)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, reference_length)


def _check_pairs(references, hypotheses):
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be sequences of strings, not a single string")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses: expected one per example")
    for name, texts in (("reference", references), ("hypothesis", hypotheses)):
        for k, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name} {k} is {type(text).__name__}, expected str")


MetricResult = ErrorRateResult | BleuResult | ExactMatchResult | TranscriptEchoResult | PerplexityResult


def headline(result: MetricResult) -> float:
    """The one number a result stands for: an error rate, exact-match accuracy or transcript-echo share
    (0-1), BLEU (0-100), or a perplexity."""
    if isinstance(result, PerplexityResult):
        return result.perplexity
    if isinstance(result, TranscriptEchoResult):
        return result.share
    if isinstance(result, BleuResult):
        return result.score
    if isinstance(result, ExactMatchResult):
        return result.accuracy
    return result.rate


def _corpus_bleu(references: Sequence[str], hypotheses: Sequence[str], *, ids: Sequence[str]) -> BleuResult:
    del ids  # BLEU is a corpus score: no per-example results
    return bleu(references, hypotheses)


# Metrics an evaluation set can be scored with (``eval.metrics``, ``jaxspeech eval --metrics``):
# name -> fn(references, hypotheses, *, ids) -> a result; scores are keyed "<set> <NAME upper-cased>".
PER_SET_METRICS = {
    "wer": wer,
    "cer": cer,
    "bleu": _corpus_bleu,
    "exact_match": exact_match,
    "transcript_echo": transcript_echo,
}
# The metrics whose references are another field of each example than its answer (``target``, else
# ``text``): metric name -> that field.
REFERENCE_FIELDS = {"transcript_echo": "text"}
