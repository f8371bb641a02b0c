"""Tokenizers: one interface over Hugging Face ``tokenizers`` files and sentencepiece models.

``encode`` treats its input as plain user text: it never yields the id of a special or added token,
whatever the text contains (``<|im_start|>``, ``<s>``, the audio placeholder string...). Control
tokens enter a sequence only through ``split_control`` (used on chat-template markup) or by id.

``encode_text`` is a whole plain-text sequence as the tokenizer's own rules build it, i.e. what
``transformers.AutoTokenizer.from_pretrained(d)(text).input_ids`` gives: the special tokens that
``tokenizer.json``'s post-processor puts around the text (Llama 3: ``<|begin_of_text|>``; Qwen2
and SmolLM2, whose post-processor adds nothing: none, although SmolLM2 defines a BOS token).
Like transformers 5, the post-processor alone decides when a ``tokenizer.json`` exists:
``add_bos_token`` / ``add_eos_token`` in ``tokenizer_config.json`` are then ignored. A bare
sentencepiece model has no such rule; it gets BOS, as transformers' Llama tokenizer gives it.
"""

from __future__ import annotations

import abc
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sentencepiece as spm
import tokenizers

from jaxspeech import paths
from jaxspeech.errors import MissingFileError, UsageError

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_JSON = "special_tokens_map.json"
GENERATION_CONFIG_JSON = "generation_config.json"
CHAT_TEMPLATE_JINJA = "chat_template.jinja"
SENTENCEPIECE_MODEL = "tokenizer.model"
# Every file of a tokenizer directory that ``load_tokenizer`` reads.
TOKENIZER_FILES = (
    TOKENIZER_JSON,
    TOKENIZER_CONFIG_JSON,
    SPECIAL_TOKENS_MAP_JSON,
    GENERATION_CONFIG_JSON,
    CHAT_TEMPLATE_JINJA,
    SENTENCEPIECE_MODEL,
)

_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
_PROBE_TEXT = "a"  # encoded once to see which special tokens a post-processor adds around a sequence

# A piece of template text after control-token splitting: a control token id, or plain text.
ControlSplit = list[int | str]


class Tokenizer(abc.ABC):
    """Common interface. Subclasses fill the attributes below in ``__init__``.

    Attributes:
      vocab_size: number of ids, added tokens included.
      bos_id / pad_id / unk_id: ids or None when the tokenizer defines none.
      eos_ids: every id that ends a generation (config eos first, then generation_config's).
      special_ids: ids of control tokens (bos, eos, pad, added special tokens); never produced by
        ``encode`` and dropped by ``decode(skip_special_tokens=True)``. The unknown token is not
        among them: plain text can legitimately map to it.
      special_tokens_map: {"bos_token": "<s>", ...} for the tokens that are set (chat templates see it).
      text_prefix / text_suffix: ids the tokenizer's own rules put before / after one plain-text
        sequence (see the module docstring).
      chat_template: the jinja chat template, or None.
      source: where the tokenizer was loaded from (for error messages).
    """

    vocab_size: int
    bos_id: int | None
    eos_ids: tuple[int, ...]
    pad_id: int | None
    unk_id: int | None
    special_ids: frozenset[int]
    special_tokens_map: dict[str, str]
    text_prefix: tuple[int, ...]
    text_suffix: tuple[int, ...]
    chat_template: str | None
    source: str

    def encode(self, text: str) -> list[int]:
        """Plain text -> ids, no BOS/EOS, never a control-token id."""
        return self.encode_with_offsets(text)[0]

    def encode_text(self, text: str) -> list[int]:
        """A plain-text sequence with the special tokens the tokenizer's own rules add around it
        (``tokenizer(text).input_ids`` in transformers; see the module docstring)."""
        return [*self.text_prefix, *self.encode(text), *self.text_suffix]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Plain text -> (ids, character spans [start, end) of each id in ``text``)."""
        if not isinstance(text, str):
            raise TypeError(f"{self.source}: encode expects a str, got {type(text).__name__}")
        ids, offsets = self._encode_plain(text)
        leaked = [i for i in ids if i in self.control_ids]
        if leaked:
            raise ValueError(
                f"{self.source}: plain-text encoding of {text[:80]!r} produced control token ids {leaked}; "
                "this tokenizer's model vocabulary can spell control tokens from text and cannot be used safely"
            )
        return ids, offsets

    @abc.abstractmethod
    def _encode_plain(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Backend encoding with every added/control token disabled."""

    @property
    @abc.abstractmethod
    def control_ids(self) -> frozenset[int]:
        """Ids that plain-text encoding never yields: special ids and every other added token."""

    @abc.abstractmethod
    def split_control(self, text: str) -> ControlSplit:
        """Template markup -> control token ids (for the tokens spelled in it) and plain text between."""

    @abc.abstractmethod
    def encode_with_control(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Markup -> (ids, character spans), control-token strings becoming their ids (as the
        backend itself would encode the text: one call, no BOS/EOS)."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """ids -> text."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of a whole token string, or None if the vocabulary lacks it."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The token string of an id."""


class HFTokenizer(Tokenizer):
    """A ``tokenizer.json`` (Hugging Face ``tokenizers``) with its optional sidecar configs."""

    def __init__(self, directory: str):
        self.source = directory
        json_path = paths.join(directory, TOKENIZER_JSON)
        spec = _read_json(json_path)
        try:
            self._full = tokenizers.Tokenizer.from_str(json.dumps(spec))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed spec
            raise UsageError(json_path, f"not a valid tokenizers JSON file ({e})") from e
        # The plain tokenizer is the same model with no added tokens: it cannot match any of them.
        spec["added_tokens"] = []
        self._plain = tokenizers.Tokenizer.from_str(json.dumps(spec))
        self._added = dict(self._full.get_added_tokens_decoder())
        self._added_ids = frozenset(self._added)

        config = _read_json(paths.join(directory, TOKENIZER_CONFIG_JSON))
        token_map = _read_json(paths.join(directory, SPECIAL_TOKENS_MAP_JSON))
        generation = _read_json(paths.join(directory, GENERATION_CONFIG_JSON))

        self.special_tokens_map = {}
        for key in _SPECIAL_TOKEN_KEYS:
            value = _token_content(config.get(key, token_map.get(key)))
            if value is not None:
                self.special_tokens_map[key] = value
        ids = {key: self._config_token_id(key, value) for key, value in self.special_tokens_map.items()}

        self.vocab_size = self._full.get_vocab_size(with_added_tokens=True)
        self.bos_id = ids.get("bos_token", _first_id(generation.get("bos_token_id")))
        self.pad_id = ids.get("pad_token", _first_id(generation.get("pad_token_id")))
        self.unk_id = ids.get("unk_token")
        eos = [ids["eos_token"]] if "eos_token" in ids else []
        eos += _id_list(generation.get("eos_token_id"), GENERATION_CONFIG_JSON)
        self.eos_ids = tuple(dict.fromkeys(eos))
        for i in self.eos_ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"{directory}: eos id {i} is outside the vocabulary of {self.vocab_size}")
        declared = {i for i in (self.bos_id, self.pad_id, *self.eos_ids) if i is not None}
        self.special_ids = frozenset({i for i, t in self._added.items() if t.special} | declared)
        self.text_prefix, self.text_suffix = self._post_processor_ids()
        self.chat_template = _chat_template(directory, config)

    def _post_processor_ids(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(ids before, ids after) that ``tokenizer.json``'s post-processor adds to one sequence."""
        encoding = self._plain.encode(_PROBE_TEXT, add_special_tokens=True)
        content = [t for t, special in enumerate(encoding.special_tokens_mask) if not special]
        ids = list(encoding.ids)
        if not content:  # the probe spelled nothing: every added id counts as a prefix
            return tuple(ids), ()
        return tuple(ids[: content[0]]), tuple(ids[content[-1] + 1 :])

    def _config_token_id(self, key: str, token: str) -> int:
        token_id = self._full.token_to_id(token)
        if token_id is None:
            raise ValueError(
                f"{self.source}: {key}={token!r} (from {TOKENIZER_CONFIG_JSON}/{SPECIAL_TOKENS_MAP_JSON}) "
                f"is not in the vocabulary of {TOKENIZER_JSON}"
            )
        return token_id

    @property
    def control_ids(self) -> frozenset[int]:
        return self._added_ids | self.special_ids

    def _encode_plain(self, text):
        encoding = self._plain.encode(text, add_special_tokens=False)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]

    def encode_with_control(self, text):
        encoding = self._full.encode(text, add_special_tokens=False)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]

    def split_control(self, text: str) -> ControlSplit:
        pieces: ControlSplit = []
        cursor = 0
        for token_id, (start, end) in zip(*self.encode_with_control(text)):
            if token_id in self._added_ids:
                if start > cursor:
                    pieces.append(text[cursor:start])
                pieces.append(token_id)
                cursor = end
        if cursor < len(text):
            pieces.append(text[cursor:])
        return pieces

    def decode(self, ids, skip_special_tokens=True):
        return self._full.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token):
        return self._full.token_to_id(token)

    def id_to_token(self, token_id):
        token = self._full.id_to_token(int(token_id))
        if token is None:
            raise KeyError(f"{self.source}: id {token_id} is outside the vocabulary of {self.vocab_size}")
        return token

    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Adds control tokens (e.g. the audio placeholder) to the vocabulary; returns their ids.

        New ids come after the existing vocabulary: the model's embedding table must grow to
        ``vocab_size``. Tokens already present keep their ids (and become control tokens).
        """
        self._full.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in tokens])
        self._added = dict(self._full.get_added_tokens_decoder())
        self._added_ids = frozenset(self._added)
        self.vocab_size = self._full.get_vocab_size(with_added_tokens=True)
        new_ids = [self._full.token_to_id(t) for t in tokens]
        self.special_ids = self.special_ids | frozenset(new_ids)
        return new_ids


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece ``.model``. Control pieces (pad/bos/eos and the reserved symbols of
    ``train_sentencepiece``) are the special tokens; sentencepiece never produces them from text.
    User-defined pieces are ordinary text pieces, as sentencepiece defines them."""

    def __init__(self, model_path: str):
        self.source = model_path
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load_from_serialized_proto(paths.read_bytes(model_path))  # a local or bucket file
        except (OSError, RuntimeError) as e:
            raise UsageError(model_path, f"not a readable sentencepiece model ({e})") from e
        size = self._sp.get_piece_size()
        self.vocab_size = size
        self.bos_id = _optional_id(self._sp.bos_id())
        self.pad_id = _optional_id(self._sp.pad_id())
        self.unk_id = _optional_id(self._sp.unk_id())
        eos = _optional_id(self._sp.eos_id())
        self.eos_ids = () if eos is None else (eos,)
        self.special_ids = frozenset(i for i in range(size) if self._sp.is_control(i))
        self.special_tokens_map = {
            key: self._sp.id_to_piece(i)
            for key, i in (
                ("bos_token", self.bos_id),
                ("eos_token", eos),
                ("unk_token", self.unk_id),
                ("pad_token", self.pad_id),
            )
            if i is not None
        }
        self.text_prefix, self.text_suffix = (() if self.bos_id is None else (self.bos_id,)), ()
        self.chat_template = None
        by_length = sorted((self._sp.id_to_piece(i) for i in self.special_ids), key=len, reverse=True)
        self._control_re = re.compile("|".join(re.escape(p) for p in by_length)) if by_length else None

    @property
    def control_ids(self) -> frozenset[int]:
        return self.special_ids

    def _encode_plain(self, text):
        proto = self._sp.encode(text, return_type="proto")
        char_of_byte = _byte_to_char_index(text)
        ids = [p.id for p in proto.pieces]
        offsets = [(char_of_byte[p.begin], char_of_byte[p.end]) for p in proto.pieces]
        return ids, offsets

    def split_control(self, text: str) -> ControlSplit:
        pieces: ControlSplit = []
        cursor = 0
        matches = self._control_re.finditer(text) if self._control_re is not None else ()
        for match in matches:
            if match.start() > cursor:
                pieces.append(text[cursor : match.start()])
            pieces.append(self._sp.piece_to_id(match.group()))
            cursor = match.end()
        if cursor < len(text):
            pieces.append(text[cursor:])
        return pieces

    def encode_with_control(self, text):
        ids, offsets, position = [], [], 0
        for piece in self.split_control(text):
            if isinstance(piece, int):
                length = len(self._sp.id_to_piece(piece))
                ids.append(piece)
                offsets.append((position, position + length))
            else:
                length = len(piece)
                piece_ids, piece_offsets = self._encode_plain(piece)
                ids.extend(piece_ids)
                offsets.extend((position + a, position + b) for a, b in piece_offsets)
            position += length
        return ids, offsets

    def decode(self, ids, skip_special_tokens=True):
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"{self.source}: id {i} is outside the vocabulary of {self.vocab_size}")
        if skip_special_tokens:
            return self._sp.decode([i for i in ids if i not in self.special_ids])
        parts, run = [], []
        for i in ids:
            if i in self.special_ids:
                parts.append(self._sp.decode(run) + self._sp.id_to_piece(i))
                run = []
            else:
                run.append(i)
        return "".join(parts) + self._sp.decode(run)

    def token_to_id(self, token):
        token_id = self._sp.piece_to_id(token)
        # sentencepiece maps unknown pieces to unk: only the unknown token's own piece maps there legitimately.
        if token_id == self._sp.unk_id() and token != self._sp.id_to_piece(token_id):
            return None
        return token_id

    def id_to_token(self, token_id):
        if not 0 <= int(token_id) < self.vocab_size:
            raise KeyError(f"{self.source}: id {token_id} is outside the vocabulary of {self.vocab_size}")
        return self._sp.id_to_piece(int(token_id))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Loads a tokenizer from a directory holding ``tokenizer.json`` (+ optional
    ``tokenizer_config.json``, ``special_tokens_map.json``, ``generation_config.json``,
    ``chat_template.jinja``), a ``tokenizer.json`` file, a directory with ``tokenizer.model``, or a
    sentencepiece ``.model`` file."""
    path = os.fspath(path)
    if paths.is_dir(path):
        if paths.is_file(paths.join(path, TOKENIZER_JSON)):
            return HFTokenizer(path)
        if paths.is_file(paths.join(path, SENTENCEPIECE_MODEL)):
            return SentencePieceTokenizer(paths.join(path, SENTENCEPIECE_MODEL))
        raise MissingFileError(path, f"expected {TOKENIZER_JSON} or {SENTENCEPIECE_MODEL} in this directory")
    if os.path.basename(path) == TOKENIZER_JSON:
        return HFTokenizer(os.path.dirname(path) or ".")
    if path.endswith(".model"):
        if not paths.is_file(path):
            raise MissingFileError(path, "no such sentencepiece model")
        return SentencePieceTokenizer(path)
    raise MissingFileError(path, f"expected a tokenizer directory, a {TOKENIZER_JSON} or a sentencepiece .model file")


def _read_json(path: str) -> dict[str, Any]:
    if not paths.is_file(path):
        return {}
    try:
        data = json.loads(paths.read_text(path))
    except ValueError as e:
        raise UsageError(path, f"invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise UsageError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def _token_content(value: Any) -> str | None:
    """A special token as configs write it: a string, {"content": ...} or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"expected a token string or {{'content': str}}, got {value!r}")


def _chat_template(directory: str, config: Mapping[str, Any]) -> str | None:
    jinja_path = paths.join(directory, CHAT_TEMPLATE_JINJA)
    if paths.is_file(jinja_path):
        return paths.read_text(jinja_path)
    template = config.get("chat_template")
    if template is None or isinstance(template, str):
        return template
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        if "default" in named:
            return named["default"]
    raise ValueError(
        f"{os.path.join(directory, TOKENIZER_CONFIG_JSON)}: chat_template must be a string or a list of "
        f"named templates with a 'default' entry"
    )


def _id_list(value: Any, where: str) -> list[int]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{where}: eos_token_id must be an int or a list of ints, got {value!r}")
    return list(values)


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _optional_id(token_id: int) -> int | None:
    return None if token_id < 0 else token_id


def _byte_to_char_index(text: str) -> list[int]:
    """index[b] = the character that UTF-8 byte offset b falls in (with one entry past the end)."""
    index = []
    for char_position, char in enumerate(text):
        index.extend([char_position] * len(char.encode("utf-8")))
    index.append(len(text))
    return index
