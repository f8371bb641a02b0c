"""The embedded speech corpus: English sentences from a grammar, spoken by eSpeak NG, built offline.

words.py (word lists) · grammar.py (templates and slots) · sentences.py (split-disjoint sentence
generator) · synthesis.py (eSpeak NG) · utterances.py (``CorpusConfig``, voices, utterances on
demand) · build.py (``build_corpus``: the corpus on disk, manifests, tokenizer) · instructions.py
(instruction tasks on its utterances with exact answers) · instruction_manifests.py (their manifests).
"""

# A lazy import: ``import jaxspeech.corpus`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.corpus.build import build_corpus
    from jaxspeech.corpus.sentences import SentenceGenerator
    from jaxspeech.corpus.utterances import CorpusConfig, SyntheticUtterances
