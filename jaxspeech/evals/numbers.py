"""Spoken English numbers -> digits, so "twenty one" and "21" score the same.

Runs on lower-cased text whose punctuation is already spaces (``.``, ``%`` and currency symbols
kept). What it does:
  cardinals       "one hundred and five" -> 105, "two thousand twenty" -> 2020, "twelve hundred" -> 1200
  digit runs      adjacent numbers are read digit-wise: "nineteen ninety nine" -> 1999, "one oh one" -> 101
  decimals        "three point one four" -> 3.14, "two and a half" -> 2.5, "1.5 million" -> 1500000
  ordinals        "twenty first" -> 21st, "fifth" -> 5th ("second" only after a number word)
  plurals         "the twenties" -> 20s, "hundreds" -> 100s
  currency        "five dollars and twenty cents" -> $5.20, "ten pounds" -> £10, "twenty cents" -> ¢20
  percent, sign   "ten percent" -> 10%, "minus five" -> -5
  repeats         "double o seven" -> 007
A lone 1 is written "one" (and "1s" "ones"): "one" is far more often a pronoun than a number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_TEENS = {
    w: i + 10
    for i, w in enumerate("ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())
}
_TENS = {w: (i + 2) * 10 for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_MULTIPLIERS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_ORDINAL_WORDS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
    "twentieth": 20,
    "thirtieth": 30,
    "fortieth": 40,
    "fiftieth": 50,
    "sixtieth": 60,
    "seventieth": 70,
    "eightieth": 80,
    "ninetieth": 90,
    "hundredth": 100,
    "thousandth": 1000,
    "millionth": 10**6,
    "billionth": 10**9,
}
_CURRENCIES = {"dollar": "$", "dollars": "$", "pound": "£", "pounds": "£", "euro": "€", "euros": "€"}
_CENTS = {"cent", "cents"}
_SMALL = {**_UNITS, **_TEENS, **_TENS}
_REPEATS = {"double": 2, "triple": 3}
_AMOUNT_RE = re.compile(r"([$£€¢]?)(\d+)(?:\.(\d+))?")
_ZERO_FRACTION_RE = re.compile(r"^([$£€¢]?\d+)\.0+$")


def _plural_value(word: str) -> int | None:
    """ "twenties" -> 20, "sixes" -> 6, "hundreds" -> 100; "ones" stays a word."""
    for stem in (
        word[:-3] + "y" if word.endswith("ies") else None,
        word[:-2] if word.endswith("es") else None,
        word[:-1] if word.endswith("s") else None,
    ):
        if stem and stem != "one" and (stem in _SMALL or stem in _MULTIPLIERS):
            return _SMALL.get(stem, _MULTIPLIERS.get(stem))
    return None


def _ordinal_suffix(value: int) -> str:
    if value % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")


def _is_number_word(word: str) -> bool:
    return word in _SMALL or word in _MULTIPLIERS


class _Reader:
    """A cursor over words with one-number-at-a-time parsing."""

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.i = 0

    def peek(self, ahead: int = 0) -> str | None:
        j = self.i + ahead
        return self.words[j] if j < len(self.words) else None

    def cardinal(self) -> tuple[int, str | None] | None:
        """Reads one grammatical cardinal (multipliers decreasing); returns (value, ordinal suffix or None)."""
        total, group, last_scale = 0, None, None  # group: the part below the last multiplier
        start = self.i
        while (word := self.peek()) is not None:
            scale = _MULTIPLIERS.get(word) or (_ORDINAL_WORDS[word] if _ORDINAL_WORDS.get(word, 0) >= 100 else None)
            if scale is not None:
                if scale == 100:
                    if group is not None and group >= 100:
                        break
                    group = (group if group is not None else 1) * 100
                else:
                    if last_scale is not None and scale >= last_scale:
                        break
                    total += (group if group is not None else 1) * scale
                    group, last_scale = None, scale
                self.i += 1
                if word in _ORDINAL_WORDS:
                    return total + (group or 0), "th"
                following = self.peek(1)
                if self.peek() == "and" and following is not None and following in _SMALL:
                    self.i += 1
                continue
            if word in _SMALL:
                value, is_ordinal = _SMALL[word], False
            elif word in _ORDINAL_WORDS and (word != "second" or self.i > start):
                value, is_ordinal = _ORDINAL_WORDS[word], True
            else:
                break
            if not self._fits(group, value):
                break
            group = (group or 0) + value
            self.i += 1
            if is_ordinal:
                return total + group, _ordinal_suffix(total + group)
        if self.i == start:
            return None
        return total + (group or 0), None

    @staticmethod
    def _fits(group: int | None, value: int) -> bool:
        """Whether a unit/teen/tens word continues the current group ("hundred" + 5, 20 + 1)."""
        if group is None:
            return True
        rest = group % 100
        if rest == 0:
            return group > 0
        return rest >= 20 and rest % 10 == 0 and 0 < value < 10

    def decimals(self) -> str:
        """Digit words after "point"."""
        digits = []
        while (word := self.peek()) is not None and (word in _UNITS or word in ("oh", "o")):
            digits.append(str(_UNITS.get(word, 0)))
            self.i += 1
        return "".join(digits)


def _read_number(reader: _Reader) -> str | None:
    """Reads a run of spoken numbers at the cursor and returns its digits (with suffix), or None."""
    pieces: list[str] = []
    suffix = None
    while suffix is None:
        word = reader.peek()
        if word is None:
            break
        if pieces and word in ("oh", "o"):
            pieces.append("0")
            reader.i += 1
            continue
        if word in _REPEATS and (reader.peek(1) in _UNITS or reader.peek(1) in ("oh", "o")):
            digit = str(_UNITS.get(reader.peek(1), 0))
            pieces.append(digit * _REPEATS[word])
            reader.i += 2
            continue
        parsed = reader.cardinal()
        if parsed is None:
            break
        value, suffix = parsed
        pieces.append(str(value))
    if not pieces:
        return None
    number = "".join(pieces)
    if suffix is not None:
        return number + suffix
    if reader.peek() == "point" and reader.peek(1) in _UNITS:
        reader.i += 1
        number += "." + reader.decimals()
    elif reader.peek() == "and" and reader.peek(1) == "a" and reader.peek(2) == "half":
        reader.i += 3
        number += ".5"
    return number


def _scale(number: str, reader: _Reader) -> str:
    """Applies a following multiplier word to a number: "1.5 million" -> 1500000, "$20 million" -> $20000000."""
    word = reader.peek()
    match = _AMOUNT_RE.fullmatch(number)
    if word not in _MULTIPLIERS or match is None:
        return number
    symbol, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    zeros = len(str(_MULTIPLIERS[word])) - 1
    if len(fraction) > zeros:
        return number
    reader.i += 1
    return symbol + ((whole + fraction.ljust(zeros, "0")).lstrip("0") or "0")


def _units(number: str, reader: _Reader) -> str:
    """Currency, cents and percent words after a number."""
    word = reader.peek()
    if word == "percent" or (word == "per" and reader.peek(1) == "cent"):
        reader.i += 1 if word == "percent" else 2
        return number + "%"
    if word in _CURRENCIES and number[0].isdigit():
        reader.i += 1
        amount = _CURRENCIES[word] + number
        if reader.peek() == "and":
            saved = reader.i
            reader.i += 1
            cents = _read_number(reader)
            if (
                cents is not None
                and cents.isdigit()
                and len(cents) <= 2
                and reader.peek() in _CENTS
                and "." not in number
            ):
                reader.i += 1
                return f"{amount}.{int(cents):02d}"
            reader.i = saved
        return amount
    if word in _CENTS and number[0].isdigit():
        reader.i += 1
        return "¢" + number
    return number


def _words(text: str) -> Iterator[str]:
    reader = _Reader(text.split())
    while (word := reader.peek()) is not None:
        sign = ""
        if word in ("minus", "negative") and (_is_number_word(reader.peek(1) or "") or _is_digits(reader.peek(1))):
            sign = "-"
            reader.i += 1
            word = reader.peek()
        if _is_digits(word):
            reader.i += 1
            yield sign + _units(_scale(_drop_zero_fraction(word), reader), reader)
            continue
        plural = _plural_value(word)
        if plural is not None:
            reader.i += 1
            yield f"{sign}{plural}s"
            continue
        starts_number = word != "second" and (_is_number_word(word) or word in _ORDINAL_WORDS or word in _REPEATS)
        number = _read_number(reader) if starts_number else None
        if number is None:
            reader.i += 1
            yield (sign and "minus ") + word
            continue
        yield sign + _units(_scale(number, reader), reader)


def _is_digits(word: str | None) -> bool:
    return word is not None and _AMOUNT_RE.fullmatch(word) is not None


def _drop_zero_fraction(word: str) -> str:
    return _ZERO_FRACTION_RE.sub(r"\1", word)


def standardize_numbers(text: str) -> str:
    """Rewrites spoken numbers in ``text`` as digits (see the module docstring)."""
    text = re.sub(r"([a-z])(\d)", r"\1 \2", text)
    text = re.sub(r"(\d)([a-z])", r"\1 \2", text)
    text = re.sub(r"(\d) (st|nd|rd|th|s)\b", r"\1\2", text)  # keep 21st, 1960s
    return " ".join(_LONE_ONE.get(word, word) for word in _words(text))


_LONE_ONE = {"1": "one", "1s": "ones"}
