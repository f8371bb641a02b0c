"""jaxspeech.evals: text normalisation, WER/CER/BLEU, and reports."""
