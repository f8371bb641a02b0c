"""Speech-LLM examples: instruction prompts, audio placeholder spans and the loss mask.

An instruction prompt is a user-turn template with ``{audio}`` slots and named fields (``{prompt}``,
``{target_language}``, ...). Fields are filled with plain text; only the template itself can hold
``{audio}`` slots, so record text can never add or move audio.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

import numpy as np

from jaxspeech.data.chat import TEMPLATE_OWNER, TokenIds, encode_chat
from jaxspeech.data.tokenizers import Tokenizer

AUDIO_SLOT = "audio"
_FIELD_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

DEFAULT_INSTRUCTION_PROMPTS: Mapping[str, str] = {
    "asr": "{audio}\nTranscribe the audio.",
    "ast": "{audio}\nTranslate the audio into {target_language}.",
    "audio_qa": "{audio}\n{prompt}",
}


def instruction_prompts(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The default instruction prompts updated with ``overrides`` (e.g. from a config); each is checked."""
    prompts = dict(DEFAULT_INSTRUCTION_PROMPTS)
    for instruction, template in (overrides or {}).items():
        if AUDIO_SLOT not in _FIELD_RE.findall(template):
            raise ValueError(f"instruction prompt {instruction!r}: {template!r} has no {{audio}} slot")
        prompts[instruction] = template
    return prompts


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    """tokens i32[L]; loss_mask f32[L] (1 on target tokens and the closing end token);
    audio_spans: [start, end) of each clip's placeholder run, in clip order."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    audio_spans: list[tuple[int, int]]


def encode_example(
    tokenizer: Tokenizer,
    *,
    instruction: str,
    audio_token_counts: Sequence[int],
    placeholder_id: int,
    prompt: str | None = None,
    target: str | None = None,
    system: str | None = None,
    fields: Mapping[str, str] | None = None,
    prompts: Mapping[str, str] | None = None,
    chat: bool = True,
    template: str | None = None,
    chunk_tag_ids: Sequence[int] | None = None,
) -> EncodedExample:
    """Builds one example: [system] user(instruction prompt with audio) assistant(target + end token).

    Args:
      instruction: a key of ``prompts`` (default ``DEFAULT_INSTRUCTION_PROMPTS``).
      audio_token_counts: placeholder tokens per clip (see ``audio_tokens.audio_token_count``); 0 for
        audio the model reads through cross-attention instead of inline placeholders.
      placeholder_id: the audio placeholder token; must be a control token of the tokenizer.
      prompt: fills ``{prompt}`` (audio QA: the record's question).
      target: the answer; None builds an inference prompt ending with the assistant header.
      fields: other template fields, e.g. {"target_language": "German"}.
      chat: False drops the chat template: [bos] user-turn text [target eos].
      template: a chat template overriding the tokenizer's (and the built-in one).
      chunk_tag_ids: one tag token per clip, placed before its placeholder run (long-form chunks).
    """
    user = _user_content(
        tokenizer,
        instruction,
        audio_token_counts,
        placeholder_id,
        prompt,
        fields,
        prompts or DEFAULT_INSTRUCTION_PROMPTS,
        chunk_tag_ids,
    )
    if target is not None and not target.strip():
        raise ValueError(f"instruction {instruction!r}: the target is empty; a training example needs target text")
    if chat:
        ids, owners, assistant = _chat_sequence(tokenizer, user, system, target, template)
    else:
        if system is not None or template is not None:
            raise ValueError("system prompts and chat templates need chat=True")
        ids, owners, assistant = _plain_sequence(tokenizer, user, target)
    if target is not None:
        ids, owners = _close_target(tokenizer, ids, owners, assistant)
    tokens = np.asarray(ids, np.int32)
    loss_mask = np.asarray([target is not None and o == assistant for o in owners], np.float32)
    return EncodedExample(
        tokens=tokens, loss_mask=loss_mask, audio_spans=_clip_spans(tokens, placeholder_id, audio_token_counts)
    )


def _user_content(tokenizer, instruction, counts, placeholder_id, prompt, fields, prompts, chunk_tag_ids):
    if instruction not in prompts:
        raise KeyError(f"unknown instruction {instruction!r}; known instructions: {sorted(prompts)}")
    template = prompts[instruction]
    if placeholder_id not in tokenizer.special_ids:
        raise ValueError(
            f"placeholder_id {placeholder_id} is not a control token of {tokenizer.source}; "
            "text could spell it: add the placeholder as a special token"
        )
    counts = list(counts)
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
        raise ValueError(f"audio_token_counts must be a non-empty list of ints >= 0, got {counts!r}")
    if chunk_tag_ids is not None:
        if len(chunk_tag_ids) != len(counts):
            raise ValueError(
                f"{len(chunk_tag_ids)} chunk tags for {len(counts)} audio clips: expected one tag per clip"
            )
        if not all(t in tokenizer.special_ids for t in chunk_tag_ids):
            raise ValueError(f"chunk_tag_ids {list(chunk_tag_ids)} must all be control tokens of {tokenizer.source}")
    clips = [
        ((chunk_tag_ids[k],) if chunk_tag_ids is not None else ()) + (placeholder_id,) * n for k, n in enumerate(counts)
    ]

    values = dict(fields or {})
    if prompt is not None:
        values["prompt"] = prompt
    pieces = _FIELD_RE.split(template)  # [text, field, text, field, ...]
    names = pieces[1::2]
    slots = names.count(AUDIO_SLOT)
    if slots == 0:
        raise ValueError(f"instruction {instruction!r}: prompt {template!r} has no {{audio}} slot")
    if slots != 1 and slots != len(counts):
        raise ValueError(
            f"instruction {instruction!r}: prompt has {slots} {{audio}} slots but there are {len(counts)} audio clips; "
            "expected one slot (all clips) or one slot per clip"
        )
    unused = set(values) - set(names)
    if unused:
        raise ValueError(f"instruction {instruction!r}: prompt {template!r} has no field(s) {sorted(unused)}")

    parts: list[str | TokenIds] = []
    slot = 0
    for k, piece in enumerate(pieces):
        if k % 2 == 0:
            if piece:
                parts.append(piece)
        elif piece == AUDIO_SLOT:
            chosen = clips if slots == 1 else [clips[slot]]
            ids = tuple(i for clip in chosen for i in clip)
            if ids:  # 0 tokens: the audio reaches the model another way (cross-attention memory)
                parts.append(TokenIds(ids))
            slot += 1
        elif piece in values:
            parts.append(str(values[piece]))
        else:
            raise ValueError(
                f"instruction {instruction!r}: prompt {template!r} needs field {{{piece}}}: pass it "
                f"{'as prompt=' if piece == 'prompt' else 'in fields='}"
            )
    return parts


def _chat_sequence(tokenizer, user, system, target, template):
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": user})
    assistant = len(messages)
    # For a prompt, a stand-in answer checks that the template renders assistant turns at all.
    answer = target if target is not None else "answer"
    encoding = encode_chat(tokenizer, [*messages, {"role": "assistant", "content": answer}], template=template)
    if assistant not in encoding.owners:
        raise ValueError(
            f"the chat template of {tokenizer.source} renders no assistant turn; expected the target "
            "text after an assistant header"
        )
    if target is None:
        encoding = encode_chat(tokenizer, messages, add_generation_prompt=True, template=template)
        return encoding.ids, encoding.owners, None
    return encoding.ids, encoding.owners, assistant


def _plain_sequence(tokenizer, user, target):
    # What the tokenizer's own rules put before plain text (``Tokenizer.text_prefix``: BOS for Llama 3,
    # nothing for Qwen2 or SmolLM2); the target's end token comes from ``_close_target``.
    ids = list(tokenizer.text_prefix)
    for part in user:
        ids.extend(part.ids if isinstance(part, TokenIds) else tokenizer.encode(part))
    owners = [TEMPLATE_OWNER] * len(ids)
    if target is None:
        return ids, owners, None
    target_ids = tokenizer.encode(target)
    return ids + target_ids, owners + [1] * len(target_ids), 1


def _close_target(tokenizer, ids, owners, assistant):
    """Gives the loss to the end token that closes the target (and any markup before it); appends
    the first eos id when the template closes the turn without one."""
    if not tokenizer.eos_ids:
        raise ValueError(f"{tokenizer.source} defines no eos token: a target needs an end token")
    last = max(t for t, o in enumerate(owners) if o == assistant)
    for t in range(last + 1, len(ids)):
        if ids[t] in tokenizer.special_ids:
            if ids[t] not in tokenizer.eos_ids:
                raise ValueError(
                    f"the chat template closes the assistant turn with {tokenizer.id_to_token(ids[t])!r}, which is not "
                    f"among eos ids {list(tokenizer.eos_ids)}: generation would not stop there (add it to "
                    "generation_config.json's eos_token_id)"
                )
            owners = owners[: last + 1] + [assistant] * (t - last) + owners[t + 1 :]
            return ids, owners
    ids = ids + [tokenizer.eos_ids[0]]
    owners = owners[: last + 1] + [assistant] * (len(ids) - last - 1)
    return ids, owners


def _clip_spans(tokens: np.ndarray, placeholder_id: int, counts: Sequence[int]) -> list[tuple[int, int]]:
    """Cuts the placeholder positions, in order, into one contiguous span per clip ((0, 0) for a
    clip without placeholders)."""
    positions = np.flatnonzero(tokens == placeholder_id)
    if len(positions) != sum(counts):
        raise ValueError(f"the sequence holds {len(positions)} audio placeholders, expected {sum(counts)}")
    spans, first = [], 0
    for n in counts:
        if n == 0:
            spans.append((0, 0))
            continue
        start, end = int(positions[first]), int(positions[first + n - 1]) + 1
        if end - start != n:
            raise ValueError(f"the chat template broke up an audio placeholder run of {n} tokens")
        spans.append((start, end))
        first += n
    return spans
