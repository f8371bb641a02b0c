"""Text normalisation before scoring, in the spirit of Whisper's English and basic normalisers.

``EnglishTextNormalizer`` (in this order): lower-case; curly apostrophes -> '; drop [bracketed],
<angled> and (parenthesised) spans; drop filler words (hmm, uh, um, ...); expand contractions and
titles (won't -> will not, mr -> mister, 's -> is as Whisper does); remove symbols and diacritics
(keeping . % and currency next to digits); spoken numbers -> digits (``numbers.py``); British ->
American spellings when given a mapping (e.g. a Whisper checkpoint's ``normalizer.json``); collapse
whitespace. ``BasicTextNormalizer`` is the language-agnostic subset.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Mapping

from jaxspeech.evals.numbers import standardize_numbers

SPELLING_FILE = "normalizer.json"

_BRACKETED = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_FILLERS = re.compile(r"\b(?:hmm+|hm|mm+|mhm|uh|uhm|um+|erm)\b")
# Letters that NFKD does not split into base + mark, written as their closest ASCII.
_LETTER_FOLDS = {"æ": "ae", "œ": "oe", "ø": "o", "ð": "d", "þ": "th", "ß": "ss", "ł": "l", "đ": "d", "ı": "i"}

# (pattern, replacement) applied in order on lower-cased text.
_CONTRACTIONS = [
    # Irregular negatives and fixed phrases first, before the generic n't rule sees them.
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bshan't\b", "shall not"),
    (r"\bain't\b", "aint"),
    (r"\blet's\b", "let us"),
    (r"\by'all\b", "you all"),
    (r"\bma'am\b", "madam"),
    (r"\b(?:i'ma|imma)\b", "i am going to"),
    (r"\bwanna\b", "want to"),
    (r"\bgonna\b", "going to"),
    (r"\bgotta\b", "got to"),
    (r"\bgimme\b", "give me"),
    (r"\blemme\b", "let me"),
    (r"\bkinda\b", "kind of"),
    (r"\bsorta\b", "sort of"),
    (r"\b(would|could|should|must)a\b", r"\1 have"),
    # Before a participle, 'd and 's mean had / has.
    (r"'d (been|gone|done|had|got)\b", r" had \1"),
    (r"'s (been|gone|got)\b", r" has \1"),
    # 90's / 1960's are plurals, not "is".
    (r"(\d)'s\b", r"\1s"),
    (r"n't\b", " not"),
    (r"'re\b", " are"),
    (r"'s\b", " is"),
    (r"'d\b", " would"),
    (r"'ll\b", " will"),
    (r"'ve\b", " have"),
    (r"'m\b", " am"),
    (r"'t\b", " not"),
]
_TITLES = {
    "mr": "mister",
    "mrs": "missus",
    "dr": "doctor",
    "prof": "professor",
    "st": "saint",
    "jr": "junior",
    "sr": "senior",
    "capt": "captain",
    "gen": "general",
    "gov": "governor",
    "lt": "lieutenant",
    "col": "colonel",
    "sgt": "sergeant",
    "rev": "reverend",
    "hon": "honorable",
    "pres": "president",
    "sen": "senator",
    "rep": "representative",
    "esq": "esquire",
    "asst": "assistant",
    "assoc": "associate",
}
_TITLE_RE = re.compile(r"\b(" + "|".join(_TITLES) + r")\b\.?")
_NUMERIC_SYMBOLS = ".%$£€¢"


def load_spelling_mapping(path: str | os.PathLike) -> dict[str, str]:
    """British -> American spellings from a JSON object {"colour": "color", ...}: a file, or a
    directory holding ``normalizer.json`` (as Whisper checkpoints ship it)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, SPELLING_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no spelling mapping (expected a JSON file such as {SPELLING_FILE})")
    try:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ValueError(f"{path}: expected a JSON object mapping British to American spellings (str -> str)")
    return mapping


def remove_symbols(text: str, *, remove_diacritics: bool, keep: str = "") -> str:
    """Marks, symbols and punctuation -> spaces (except ``keep``); diacritics dropped if asked."""
    out = []
    for char in unicodedata.normalize("NFKD" if remove_diacritics else "NFKC", text):
        category = unicodedata.category(char)
        if char in keep:
            out.append(char)
        elif remove_diacritics and char in _LETTER_FOLDS:
            out.append(_LETTER_FOLDS[char])
        elif remove_diacritics and category == "Mn":
            continue
        elif category[0] in "MSP":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


class BasicTextNormalizer:
    """Any language: lower-case, drop bracketed spans, symbols -> spaces, collapse whitespace.
    ``split_letters`` scores scripts without spaces (e.g. Chinese) per character."""

    def __init__(self, remove_diacritics: bool = False, split_letters: bool = False):
        self.remove_diacritics = remove_diacritics
        self.split_letters = split_letters

    def __call__(self, text: str) -> str:
        text = _BRACKETED.sub(" ", text.lower())
        text = remove_symbols(text, remove_diacritics=self.remove_diacritics).lower()
        if self.split_letters:
            text = " ".join(text.replace(" ", ""))  # marks are gone already: one letter per character
        return " ".join(text.split())


class EnglishTextNormalizer:
    """English normalisation for WER (see the module docstring).

    Args:
      spelling: British -> American mapping, or a path for ``load_spelling_mapping``; None skips it.
    """

    def __init__(self, spelling: Mapping[str, str] | str | os.PathLike | None = None):
        if spelling is None or isinstance(spelling, Mapping):
            self.spelling = dict(spelling or {})
        else:
            self.spelling = load_spelling_mapping(spelling)
        self._contractions = [(re.compile(p), r) for p, r in _CONTRACTIONS]

    def __call__(self, text: str) -> str:
        text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
        text = _BRACKETED.sub(" ", text)
        text = _FILLERS.sub(" ", text)
        text = re.sub(r"\s+'", "'", text)
        text = _TITLE_RE.sub(lambda m: _TITLES[m.group(1)] + " ", text)
        for pattern, replacement in self._contractions:
            text = pattern.sub(replacement, text)
        text = re.sub(r"(\d),(\d)", r"\1\2", text)  # 1,000 -> 1000
        text = re.sub(r"\.(?!\d)", " ", text)  # a period is kept only as a decimal point
        text = remove_symbols(text, remove_diacritics=True, keep=_NUMERIC_SYMBOLS)
        text = standardize_numbers(text)
        text = " ".join(self.spelling.get(word, word) for word in text.split())
        # Numeric symbols that ended up away from digits are punctuation after all.
        text = re.sub(r"[.$£€¢](?!\d)", " ", text)
        text = re.sub(r"(?<!\d)%", " ", text)
        return " ".join(text.split())
