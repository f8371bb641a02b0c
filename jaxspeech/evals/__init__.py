"""Evaluation: text normalisers, WER/CER/BLEU, reports and LLM-dormancy diagnostics."""

# A lazy import: ``import jaxspeech.evals`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.evals.metrics import ErrorRateResult, bleu, cer, wer
    from jaxspeech.evals.normalizer import BasicTextNormalizer, EnglishTextNormalizer
    from jaxspeech.evals.report import wer_table
