"""A small weighted context-free grammar: parse rules from text, sample sentences, count them.

Rule text, one rule per line (continuation lines start with ``|``)::

    NP        -> 3: the {person} | @a {adj_person} {person} | {name}
    VP[F]     -> {v_food:F} NP | {v_intr:F}
    CLAUSE    -> NP VP[past] .

Tokens: ``NAME`` / ``NAME[arg]`` (upper case) expand a rule, where ``NAME[F]`` declares a rule
with one parameter substituted into its body (``{v_food:F}`` becomes ``{v_food:past}``);
``{slot}`` / ``{slot:form}`` draw a word from a lexicon slot; ``@a`` is the indefinite article,
resolved to ``a``/``an`` from the next word; ``,`` ``.`` ``?`` are punctuation (spoken text only);
``_`` is empty; anything else is a literal word. ``3:`` before an alternative is its weight
(default 1).

``count_by_length`` counts derivations by their number of words with a fixed-point dynamic
program, an upper bound on distinct sentences (different derivations can yield the same words).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping, Sequence

import numpy as np

PUNCTUATION = (",", ".", "?")
ARTICLE = "@a"
_RULE_TOKEN = re.compile(r"^([A-Z][A-Z0-9_]*)(?:\[([A-Za-z_]+)\])?$")
_SLOT_TOKEN = re.compile(r"^\{([a-z_]+)(?::([A-Za-z_]+))?\}$")
_WORD_TOKEN = re.compile(r"^[a-z]+$")
_WEIGHT = re.compile(r"^(\d+(?:\.\d+)?):$")


@dataclasses.dataclass(frozen=True)
class Slot:
    """A lexicon class: entries (each one or more words) and a function giving an entry's form."""

    entries: tuple[str, ...]
    inflect: Callable[[str, str | None], str]

    def word_count_histogram(self, forms: Sequence[str | None]) -> dict[int, int]:
        histogram: dict[int, int] = {}
        for entry in self.entries:
            for form in forms:
                length = len(self.inflect(entry, form).split())
                histogram[length] = histogram.get(length, 0) + 1
        return histogram


@dataclasses.dataclass(frozen=True)
class Alternative:
    weight: float
    tokens: tuple[str, ...]


class GrammarError(ValueError):
    """A rule text that does not parse or references something undefined."""


class Grammar:
    """Weighted CFG over lexicon slots. ``sample(rng) -> tokens``; ``count_by_length(n)``."""

    def __init__(self, rules_text: str, slots: Mapping[str, Slot], start: str = "S", max_depth: int = 14):
        self.slots = dict(slots)
        self.start = start
        self.max_depth = max_depth
        self._templates: dict[str, tuple[str | None, list[Alternative]]] = {}
        self._parse(rules_text)
        self._rules: dict[str, list[Alternative]] = {}
        self._instantiate(start)
        self._choice_tables = {
            name: (np.cumsum([a.weight for a in alts]) / sum(a.weight for a in alts), alts)
            for name, alts in self._rules.items()
        }

    # -- parsing ---------------------------------------------------------------------------
    def _parse(self, text: str) -> None:
        logical_lines: list[str] = []
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("|"):
                if not logical_lines:
                    raise GrammarError(f"continuation line before any rule: {raw!r}")
                logical_lines[-1] += " " + line
            else:
                logical_lines.append(line)
        for line in logical_lines:
            head, arrow, body = line.partition("->")
            if not arrow:
                raise GrammarError(f"rule without '->': {line!r}")
            match = _RULE_TOKEN.match(head.strip())
            if not match:
                raise GrammarError(f"bad rule name {head.strip()!r} in {line!r}")
            name, parameter = match.groups()
            if name in self._templates:
                raise GrammarError(f"rule {name} is defined twice")
            alternatives = [self._parse_alternative(part, line) for part in body.split("|")]
            self._templates[name] = (parameter, alternatives)

    def _parse_alternative(self, text: str, line: str) -> Alternative:
        tokens = text.split()
        weight = 1.0
        if tokens and _WEIGHT.match(tokens[0]):
            weight = float(_WEIGHT.match(tokens[0]).group(1))
            tokens = tokens[1:]
        if not tokens:
            raise GrammarError(f"empty alternative (write '_' for nothing) in {line!r}")
        for token in tokens:
            if not (
                token in PUNCTUATION
                or token in (ARTICLE, "_")
                or _RULE_TOKEN.match(token)
                or _SLOT_TOKEN.match(token)
                or _WORD_TOKEN.match(token)
            ):
                raise GrammarError(f"bad token {token!r} in {line!r}")
        return Alternative(weight, tuple(t for t in tokens if t != "_"))

    def _instantiate(self, reference: str) -> None:
        """Creates the concrete rule for ``NAME`` or ``NAME[arg]`` and everything it reaches."""
        pending = [reference]
        while pending:
            reference = pending.pop()
            if reference in self._rules:
                continue
            name, argument = _RULE_TOKEN.match(reference).groups()
            if name not in self._templates:
                raise GrammarError(f"undefined rule {name} (referenced as {reference})")
            parameter, alternatives = self._templates[name]
            if (parameter is None) != (argument is None):
                raise GrammarError(f"rule {name} takes {'one argument' if parameter else 'no argument'}: {reference}")
            concrete = []
            for alternative in alternatives:
                tokens = tuple(self._substitute(t, parameter, argument) for t in alternative.tokens)
                for token in tokens:
                    slot = _SLOT_TOKEN.match(token)
                    if slot and slot.group(1) not in self.slots:
                        raise GrammarError(f"unknown lexicon slot {{{slot.group(1)}}} in rule {reference}")
                    if _RULE_TOKEN.match(token):
                        pending.append(token)
                concrete.append(Alternative(alternative.weight, tokens))
            self._rules[reference] = concrete

    @staticmethod
    def _substitute(token: str, parameter: str | None, argument: str | None) -> str:
        if parameter is None:
            return token
        slot = _SLOT_TOKEN.match(token)
        if slot and slot.group(2) == parameter:
            return "{%s:%s}" % (slot.group(1), argument)
        rule = _RULE_TOKEN.match(token)
        if rule and rule.group(2) == parameter:
            return f"{rule.group(1)}[{argument}]"
        return token

    # -- sampling --------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, symbol: str | None = None) -> list[str]:
        """Tokens (words, ``@a`` and punctuation) of one random derivation of ``symbol``."""
        out: list[str] = []
        self._expand(symbol or self.start, rng, out, 0)
        return out

    def _expand(self, reference: str, rng: np.random.Generator, out: list[str], depth: int) -> None:
        if depth > self.max_depth:
            raise RecursionError(f"grammar derivation deeper than {self.max_depth} at {reference}")
        cumulative, alternatives = self._choice_tables[reference]
        alternative = alternatives[
            min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(alternatives) - 1)
        ]
        for token in alternative.tokens:
            if _RULE_TOKEN.match(token):
                self._expand(token, rng, out, depth + 1)
                continue
            slot = _SLOT_TOKEN.match(token)
            if slot:
                lexicon_slot = self.slots[slot.group(1)]
                entry = lexicon_slot.entries[int(rng.integers(len(lexicon_slot.entries)))]
                out.extend(lexicon_slot.inflect(entry, slot.group(2)).split())
            else:
                out.append(token)

    # -- counting --------------------------------------------------------------------------
    def count_by_length(self, max_words: int) -> list[int]:
        """Number of derivations of the start symbol with exactly n words, n = 0 .. max_words."""
        size = max_words + 1
        counts = {name: [0] * size for name in self._rules}
        slot_vectors: dict[str, list[int]] = {}

        def vector(token: str) -> list[int]:
            if token in PUNCTUATION:
                return [1] + [0] * max_words
            if _RULE_TOKEN.match(token):
                return counts[token]
            slot = _SLOT_TOKEN.match(token)
            if slot:
                if token not in slot_vectors:
                    histogram = self.slots[slot.group(1)].word_count_histogram([slot.group(2)])
                    slot_vectors[token] = [histogram.get(n, 0) for n in range(size)]
                return slot_vectors[token]
            return [0, 1] + [0] * (max_words - 1)  # a literal word or the article

        def convolve(a: list[int], b: list[int]) -> list[int]:
            result = [0] * size
            for i, x in enumerate(a):
                if x:
                    for j in range(size - i):
                        result[i + j] += x * b[j]
            return result

        for _ in range(10 * size):
            changed = False
            for name, alternatives in self._rules.items():
                total = [0] * size
                for alternative in alternatives:
                    product = [1] + [0] * max_words
                    for token in alternative.tokens:
                        product = convolve(product, vector(token))
                    total = [x + y for x, y in zip(total, product)]
                if total != counts[name]:
                    counts[name], changed = total, True
            if not changed:
                return counts[self.start]
        raise GrammarError("derivation counts did not converge (a rule can derive itself without words)")


def render(tokens: Sequence[str], article: Callable[[str], str]) -> tuple[str, str]:
    """(transcript, spoken text): resolves ``@a`` from the next word; punctuation only in the latter."""
    words: list[str] = []
    spoken: list[str] = []
    for position, token in enumerate(tokens):
        if token in PUNCTUATION:
            if spoken:
                spoken[-1] += token
            continue
        if token == ARTICLE:
            following = next((t for t in tokens[position + 1 :] if t not in PUNCTUATION and t != ARTICLE), "")
            token = article(following)
        words.append(token)
        spoken.append(token)
    return " ".join(words), " ".join(spoken)
