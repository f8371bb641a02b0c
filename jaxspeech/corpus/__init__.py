"""The embedded speech corpus: English sentences from a grammar, spoken by eSpeak NG, built offline.

words.py (word lists) · grammar.py (templates and slots) · sentences.py (split-disjoint sentence
generator) · synthesis.py (eSpeak NG) · utterances.py (``CorpusConfig``, voices, utterances on
demand) · build.py (``build_corpus``: the corpus on disk, manifests, tokenizer).
"""
