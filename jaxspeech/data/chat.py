"""Chat templates rendered as Hugging Face renders them, tokenized so that content cannot inject control tokens.

The jinja environment matches ``transformers``' (sandboxed, ``trim_blocks``/``lstrip_blocks``,
loop controls, ``raise_exception``, ``strftime_now``, a non-escaping ``tojson``, the tokenizer's
special tokens as variables, ``{% generation %}`` blocks). Each message's content is wrapped in
random sentinels before rendering, which tells every character of the result apart as markup or
content. The whole chat is then encoded in one call, exactly as ``apply_chat_template`` does; if
any token that touches content comes out as a control token (content spelling ``<|im_end|>``, or
completing one with the markup next to it), the chat is encoded piecewise instead: markup split on
the control tokens it spells, each text run between them encoded as plain text. Content can
therefore never yield a control token, and ordinary content gets transformers' ids.

Without a chat template, ``builtin_template`` is used: with the role tokens of
``special_tokens.ROLE_TOKENS`` in the vocabulary (tokenizers from ``train_sentencepiece``)::

    <bos><|system|>{system}</s><|user|>{user}</s><|assistant|>{answer}</s>

otherwise plain-text headers::

    <bos>System:\\n{system}\\nUser:\\n{user}\\nAssistant:\\n{answer}</s>\\n
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import json
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from jaxspeech.data import special_tokens
from jaxspeech.data.tokenizers import Tokenizer

ROLES = ("system", "user", "assistant", "tool")
TEMPLATE_OWNER = -1  # owner of tokens that come from the template's markup
_IDS_STAND_IN = "\ue002"
_MARKER_RE = re.compile("\ue000(\\d{12})\\.([123])\\.(\\d+)\ue001")

BUILTIN_ROLE_TOKEN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
BUILTIN_TEXT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['role'] | capitalize + ':\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:\\n' }}{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """A part of a message's content inserted as these exact ids (e.g. audio placeholders)."""

    ids: tuple[int, ...]


Content = str | Sequence[str | TokenIds]


@dataclasses.dataclass(frozen=True)
class ChatEncoding:
    """ids i32[L] of a rendered chat; owners[t] is the index of the message whose content produced
    token t, or TEMPLATE_OWNER for the template's markup."""

    ids: list[int]
    owners: list[int]


def builtin_template(tokenizer: Tokenizer) -> str:
    """The template used when the tokenizer has none (see the module docstring)."""
    has_role_tokens = all(
        tokenizer.token_to_id(t) in tokenizer.special_ids for t in special_tokens.ROLE_TOKENS.values()
    )
    return BUILTIN_ROLE_TOKEN_TEMPLATE if has_role_tokens else BUILTIN_TEXT_TEMPLATE


def encode_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    template: str | None = None,
    **template_kwargs: Any,
) -> ChatEncoding:
    """Renders ``messages`` ([{"role": ..., "content": str | [str | TokenIds, ...]}]) with the
    tokenizer's chat template (or ``template``) and tokenizes the result."""
    template = template or tokenizer.chat_template or builtin_template(tokenizer)
    contents = [_content_parts(m, i) for i, m in enumerate(messages)]
    markers = _Markers.fresh(contents)
    marked = [dict(m, content=markers.wrap(i, parts)) for i, (m, parts) in enumerate(zip(messages, contents))]
    unmarked = [dict(m, content=_Markers.stand_in(parts)) for m, parts in zip(messages, contents)]

    compiled = compile_chat_template(template)
    variables = {**tokenizer.special_tokens_map, "tools": None, "documents": None, **template_kwargs}
    rendered = compiled.render(messages=marked, add_generation_prompt=add_generation_prompt, **variables)
    reference = compiled.render(messages=unmarked, add_generation_prompt=add_generation_prompt, **variables)
    if markers.strip(rendered) != reference:
        raise ValueError(
            "the chat template transforms message content in a way that cannot be tracked (it renders differently "
            "when each content is wrapped in sentinels); use a template that inserts message['content'] as a whole"
        )
    return _tokenize_segments(tokenizer, markers.parse(rendered, contents))


@functools.lru_cache(maxsize=32)
def compile_chat_template(template: str) -> jinja2.Template:
    """Compiles a chat template in the sandboxed environment HF uses (cached per template string)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"chat template line {e.lineno}: {e.message}") from e


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text in some templates; it renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters, which would change what the model sees.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _content_parts(message: Mapping[str, Any], index: int) -> list[str | TokenIds]:
    if not isinstance(message, Mapping):
        raise TypeError(f"message {index}: expected a mapping with 'role' and 'content', got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise ValueError(f"message {index}: role must be one of {ROLES}, got {role!r}")
    content = message.get("content")
    parts = [content] if isinstance(content, str) else content
    if not isinstance(parts, Sequence) or not all(isinstance(p, (str, TokenIds)) for p in parts):
        raise TypeError(
            f"message {index} ({role}): content must be a str or a list of str and TokenIds, got {content!r}"
        )
    return list(parts)


@dataclasses.dataclass(frozen=True)
class _Markers:
    """Sentinels ``\\ue000<nonce>.<kind>.<index>\\ue001``: kind 1 opens message <index>'s content,
    2 closes it, 3 stands for its <index>-th TokenIds part. Private-use characters and digits survive
    case changes; the random nonce cannot be forged by content."""

    nonce: str

    OPEN, CLOSE, IDS = "1", "2", "3"

    @classmethod
    def fresh(cls, contents: Sequence[Sequence[str | TokenIds]]) -> "_Markers":
        texts = [p for parts in contents for p in parts if isinstance(p, str)]
        while True:
            nonce = str(secrets.randbelow(10**12)).zfill(12)
            if not any(nonce in t for t in texts):
                return cls(nonce)

    def marker(self, kind: str, index: int) -> str:
        return f"\ue000{self.nonce}.{kind}.{index}\ue001"

    def matches(self, rendered: str) -> Iterator[re.Match]:
        """This render's markers (group 2: kind, group 3: index)."""
        return (m for m in _MARKER_RE.finditer(rendered) if m.group(1) == self.nonce)

    def wrap(self, message_index: int, parts: Sequence[str | TokenIds]) -> str:
        body = "".join(p if isinstance(p, str) else self.marker(self.IDS, k) for k, p in enumerate(parts))
        # Whitespace at the ends stays outside the sentinels so that a template's `| trim` still removes it.
        core = body.strip()
        start = len(body) - len(body.lstrip())
        lead, trail = body[:start], body[start + len(core) :]
        return lead + self.marker(self.OPEN, message_index) + core + self.marker(self.CLOSE, message_index) + trail

    @staticmethod
    def stand_in(parts: Sequence[str | TokenIds]) -> str:
        """The content as the unmarked reference render sees it: one non-space character per TokenIds."""
        return "".join(p if isinstance(p, str) else _IDS_STAND_IN for p in parts)

    def strip(self, rendered: str) -> str:
        """The marked render with markers removed (TokenIds replaced by their stand-in)."""

        def replace(m: re.Match) -> str:
            if m.group(1) != self.nonce:
                return m.group(0)
            return _IDS_STAND_IN if m.group(2) == self.IDS else ""

        return _MARKER_RE.sub(replace, rendered)

    def parse(self, rendered: str, contents) -> list[_Segment]:
        """Rendered text -> segments: template markup (owner TEMPLATE_OWNER), content text, TokenIds."""
        segments: list[_Segment] = []
        owner, cursor = TEMPLATE_OWNER, 0

        def add_text(text: str):
            if text:
                segments.append(_Segment(owner, text=text))

        for match in self.matches(rendered):
            add_text(rendered[cursor : match.start()])
            cursor = match.end()
            kind, index = match.group(2), int(match.group(3))
            if kind == self.OPEN:
                if owner != TEMPLATE_OWNER:
                    raise ValueError(f"the chat template nests message {index}'s content inside message {owner}'s")
                owner = index
            elif kind == self.CLOSE:
                if owner != index:
                    raise ValueError(f"the chat template splits message {index}'s content")
                owner = TEMPLATE_OWNER
            else:
                parts = contents[owner] if owner != TEMPLATE_OWNER else ()
                if index >= len(parts) or not isinstance(parts[index], TokenIds):
                    raise ValueError("the chat template moved a TokenIds part out of its message's content")
                segments.append(_Segment(owner, ids=tuple(int(i) for i in parts[index].ids)))
        add_text(rendered[cursor:])
        if owner != TEMPLATE_OWNER:
            raise ValueError(f"the chat template cuts message {owner}'s content short")
        return segments


@dataclasses.dataclass(frozen=True)
class _Segment:
    """A stretch of the rendered chat: ``text`` (markup if owner is TEMPLATE_OWNER, else content) or fixed ``ids``."""

    owner: int
    text: str = ""
    ids: tuple[int, ...] = ()


def _tokenize_segments(tokenizer: Tokenizer, segments: Sequence[_Segment]) -> ChatEncoding:
    """One encoding of the whole chat, as transformers does, when content yields no control token
    there; otherwise (content spelling control tokens) each text run is encoded as plain text."""
    return _joint_encoding(tokenizer, segments) or _piecewise_encoding(tokenizer, segments)


def _joint_encoding(tokenizer: Tokenizer, segments: Sequence[_Segment]) -> ChatEncoding | None:
    texts = []
    for segment in segments:
        if segment.ids:
            names = {i: tokenizer.id_to_token(i) for i in set(segment.ids)}
            texts.append("".join(names[i] for i in segment.ids))
        else:
            texts.append(segment.text)
    bounds = list(itertools.accumulate((len(t) for t in texts), initial=0))  # segment k: [bounds[k], bounds[k+1])
    ids, offsets = tokenizer.encode_with_control("".join(texts))
    token_starts = [start for start, _ in offsets]
    owners = [TEMPLATE_OWNER] * len(ids)
    for k, segment in enumerate(segments):
        lo, hi = bounds[k], bounds[k + 1]
        first, stop = bisect.bisect_left(token_starts, lo), bisect.bisect_left(token_starts, hi)
        straddles = first > 0 and offsets[first - 1][1] > lo  # a token from before reaches into this segment
        if segment.ids:
            if straddles or ids[first:stop] != list(segment.ids) or (stop > first and offsets[stop - 1][1] > hi):
                return None  # the fixed ids did not come out exactly as given
            owners[first:stop] = [segment.owner] * (stop - first)
        elif segment.owner != TEMPLATE_OWNER:
            first -= straddles  # a token joining markup and content belongs to the content
            if any(i in tokenizer.control_ids for i in ids[first:stop]):
                return None  # content (alone or joined with markup) spells a control token
            owners[first:stop] = [segment.owner] * (stop - first)
    return ChatEncoding(ids=list(ids), owners=owners)


def _piecewise_encoding(tokenizer: Tokenizer, segments: Sequence[_Segment]) -> ChatEncoding:
    """Markup is split on the control tokens it spells; each text run between fixed ids is encoded plain."""
    ids: list[int] = []
    owners: list[int] = []
    run: list[tuple[str, int]] = []

    def flush():
        if not run:
            return
        text = "".join(t for t, _ in run)
        bounds, position = [], 0
        for piece_text, piece_owner in run:
            bounds.append((position, position + len(piece_text), piece_owner))
            position += len(piece_text)
        run_ids, offsets = tokenizer.encode_with_offsets(text)
        for token_id, (start, end) in zip(run_ids, offsets):
            ids.append(token_id)
            owners.append(_owner_of_span(bounds, start, end))
        run.clear()

    def add_ids(fixed: Sequence[int], owner: int):
        flush()
        ids.extend(fixed)
        owners.extend([owner] * len(fixed))

    for segment in segments:
        if segment.ids:
            add_ids(segment.ids, segment.owner)
        elif segment.owner != TEMPLATE_OWNER:
            run.append((segment.text, segment.owner))
        else:
            for piece in tokenizer.split_control(segment.text):
                if isinstance(piece, str):
                    run.append((piece, TEMPLATE_OWNER))
                else:
                    add_ids((piece,), TEMPLATE_OWNER)
    flush()
    return ChatEncoding(ids=ids, owners=owners)


def _owner_of_span(bounds, start: int, end: int) -> int:
    """A token that overlaps message content belongs to that message, even if it also covers markup."""
    end = max(end, start + 1)
    for lo, hi, owner in bounds:
        if owner != TEMPLATE_OWNER and lo < end and start < hi:
            return owner
    return TEMPLATE_OWNER
