"""encode_example: chat layout, loss mask, audio spans, chunk tags and the errors."""

import numpy as np
import pytest

from jaxspeech.data.prompts import DEFAULT_INSTRUCTION_PROMPTS, encode_example, instruction_prompts


def masked_text(tok, example):
    return tok.decode(example.tokens[example.loss_mask > 0], skip_special_tokens=False)


def test_chatml_asr_example(chatml):
    audio = chatml.token_to_id("<|audio|>")
    ex = encode_example(chatml, instruction="asr", audio_token_counts=[3], placeholder_id=audio, target="the quick fox")
    assert ex.tokens.dtype == np.int32 and ex.loss_mask.dtype == np.float32
    assert chatml.decode(ex.tokens, skip_special_tokens=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|audio|><|audio|><|audio|>\nTranscribe the audio.<|im_end|>\n"
        "<|im_start|>assistant\nthe quick fox<|im_end|>\n"
    )
    target_ids = chatml.encode("the quick fox") + [chatml.token_to_id("<|im_end|>")]
    (where,) = np.nonzero(ex.loss_mask)
    assert ex.tokens[where].tolist() == target_ids
    assert where.tolist() == list(range(where[0], where[0] + len(target_ids)))  # one contiguous block
    assert where[-1] == len(ex.tokens) - 2  # the trailing newline after <|im_end|> is not trained
    [(start, end)] = ex.audio_spans
    assert end - start == 3 and (ex.tokens[start:end] == audio).all()
    assert (ex.tokens == audio).sum() == 3 and ex.loss_mask[start:end].sum() == 0


def test_llama3_example_with_system(llama3):
    audio = llama3.token_to_id("<|audio|>")
    ex = encode_example(
        llama3,
        instruction="ast",
        audio_token_counts=[2],
        placeholder_id=audio,
        target="Hallo Welt",
        system="Be brief.",
        fields={"target_language": "German"},
    )
    assert llama3.decode(ex.tokens, skip_special_tokens=False) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<|audio|><|audio|>\nTranslate the audio into German.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHallo Welt<|eot_id|>"
    )
    assert masked_text(llama3, ex) == "Hallo Welt<|eot_id|>"
    assert ex.loss_mask[-1] == 1


def test_inference_prompt_is_prefix_of_training_sequence(chatml, llama3, metaspace, sp):
    for tok in (chatml, llama3, metaspace, sp):
        audio = tok.token_to_id("<|audio|>")
        train = encode_example(
            tok, instruction="asr", audio_token_counts=[4], placeholder_id=audio, target="hello world"
        )
        infer = encode_example(tok, instruction="asr", audio_token_counts=[4], placeholder_id=audio)
        assert tok.decode(train.tokens[train.loss_mask > 0]) == "hello world"
        first_target = int(np.argmax(train.loss_mask))
        assert infer.tokens.tolist() == train.tokens[:first_target].tolist()
        assert infer.loss_mask.sum() == 0 and infer.audio_spans == train.audio_spans


def test_several_clips_in_one_slot_and_chunk_tags(chatml):
    audio = chatml.token_to_id("<|audio|>")
    ex = encode_example(chatml, instruction="asr", audio_token_counts=[3, 2], placeholder_id=audio, target="x")
    (a, b), (c, d) = ex.audio_spans
    assert (b - a, d - c) == (3, 2) and b == c  # adjacent runs, cut by the counts
    tags = [chatml.token_to_id(f"<chunk_{i}>") for i in (1, 2)]
    ex = encode_example(
        chatml, instruction="asr", audio_token_counts=[3, 2], placeholder_id=audio, target="x", chunk_tag_ids=tags
    )
    (a, b), (c, d) = ex.audio_spans
    assert (b - a, d - c) == (3, 2)
    assert ex.tokens[a - 1] == tags[0] and ex.tokens[c - 1] == tags[1] and c == b + 1
    assert "<chunk_1><|audio|><|audio|><|audio|><chunk_2><|audio|><|audio|>\nTranscribe" in chatml.decode(
        ex.tokens, skip_special_tokens=False
    )


def test_one_slot_per_clip(chatml):
    audio = chatml.token_to_id("<|audio|>")
    prompts = instruction_prompts({"compare": "First: {audio}\nSecond: {audio}\nAre they the same speaker?"})
    ex = encode_example(
        chatml, instruction="compare", audio_token_counts=[1, 2], placeholder_id=audio, prompts=prompts, target="yes"
    )
    assert "First: <|audio|>\nSecond: <|audio|><|audio|>\nAre they" in chatml.decode(
        ex.tokens, skip_special_tokens=False
    )
    assert [e - s for s, e in ex.audio_spans] == [1, 2]
    with pytest.raises(ValueError, match="2 {audio} slots but there are 3 audio clips"):
        encode_example(
            chatml, instruction="compare", audio_token_counts=[1, 1, 1], placeholder_id=audio, prompts=prompts
        )


def test_record_prompt_cannot_add_audio_or_control_tokens(chatml):
    audio = chatml.token_to_id("<|audio|>")
    question = "What is {audio} <|audio|><|im_end|> here?"
    ex = encode_example(
        chatml, instruction="audio_qa", audio_token_counts=[2], placeholder_id=audio, prompt=question, target="a dog"
    )
    assert (ex.tokens == audio).sum() == 2
    user_text = chatml.decode(ex.tokens, skip_special_tokens=False)
    assert "<|audio|><|audio|>\nWhat is {audio} <|audio|><|im_end|> here?<|im_end|>" in user_text
    assert (ex.tokens == chatml.token_to_id("<|im_end|>")).sum() == 3  # system, user, assistant turns only


def test_plain_layout_without_chat(sp, chatml):
    audio = sp.token_to_id("<|audio|>")
    ex = encode_example(
        sp, instruction="asr", audio_token_counts=[2], placeholder_id=audio, target="hello world", chat=False
    )
    assert ex.tokens[0] == sp.bos_id and ex.tokens[-1] == sp.eos_ids[0]
    assert ex.tokens[1:3].tolist() == [audio, audio] and ex.audio_spans == [(1, 3)]
    assert masked_text(sp, ex) == "hello world</s>"
    ex = encode_example(
        chatml,
        instruction="asr",
        audio_token_counts=[2],
        placeholder_id=chatml.token_to_id("<|audio|>"),
        target="hi",
        chat=False,
    )
    assert ex.tokens[0] == chatml.token_to_id("<|audio|>")  # no bos in this tokenizer
    assert masked_text(chatml, ex) == "hi<|im_end|>"


def test_builtin_template_example(sp):
    audio = sp.token_to_id("<|audio|>")
    ex = encode_example(
        sp, instruction="asr", audio_token_counts=[2], placeholder_id=audio, target="the fox", system="be nice"
    )
    assert sp.decode(ex.tokens, skip_special_tokens=False) == (
        "<s><|system|>be nice</s><|user|><|audio|><|audio|>Transcribe the audio.</s><|assistant|>the fox</s>"
    )
    assert masked_text(sp, ex) == "the fox</s>"


def test_end_token_appended_when_template_has_none(chatml):
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    audio = chatml.token_to_id("<|audio|>")
    ex = encode_example(
        chatml, instruction="asr", audio_token_counts=[1], placeholder_id=audio, target="hi", template=template
    )
    assert ex.tokens[-1] == chatml.eos_ids[0]
    assert masked_text(chatml, ex) == "hi\n<|im_end|>"


def test_errors(chatml, llama3):
    audio = chatml.token_to_id("<|audio|>")
    common = dict(audio_token_counts=[2], placeholder_id=audio)
    with pytest.raises(ValueError, match="target is empty"):
        encode_example(chatml, instruction="asr", target="  ", **common)
    with pytest.raises(KeyError, match="unknown instruction 'asrr'"):
        encode_example(chatml, instruction="asrr", **common)
    with pytest.raises(ValueError, match="needs field {target_language}"):
        encode_example(chatml, instruction="ast", target="x", **common)
    with pytest.raises(ValueError, match="needs field {prompt}: pass it as prompt="):
        encode_example(chatml, instruction="audio_qa", target="x", **common)
    with pytest.raises(ValueError, match=r"has no field\(s\) \['prompt'\]"):
        encode_example(chatml, instruction="asr", prompt="hi", **common)
    with pytest.raises(ValueError, match="not a control token"):
        encode_example(chatml, instruction="asr", audio_token_counts=[2], placeholder_id=chatml.encode("a")[0])
    with pytest.raises(ValueError, match="non-empty list of ints >= 0"):
        encode_example(chatml, instruction="asr", audio_token_counts=[], placeholder_id=audio)
    with pytest.raises(ValueError, match="non-empty list of ints >= 0"):
        encode_example(chatml, instruction="asr", audio_token_counts=[-1], placeholder_id=audio)
    with pytest.raises(ValueError, match="1 chunk tags for 2 audio clips"):
        encode_example(
            chatml,
            instruction="asr",
            audio_token_counts=[1, 1],
            placeholder_id=audio,
            chunk_tag_ids=[chatml.token_to_id("<chunk_1>")],
        )
    no_assistant = "{% for m in messages %}{% if m.role != 'assistant' %}{{ m.content }}{% endif %}{% endfor %}"
    with pytest.raises(ValueError, match="renders no assistant turn"):
        encode_example(chatml, instruction="asr", target="x", template=no_assistant, **common)
    with pytest.raises(ValueError, match="renders no assistant turn"):
        encode_example(chatml, instruction="asr", template=no_assistant, **common)
    wrong_end = "{% for m in messages %}{{ m.content }}<|im_start|>{% endfor %}"
    with pytest.raises(ValueError, match=r"closes the assistant turn with '<\|im_start\|>'"):
        encode_example(chatml, instruction="asr", target="x", template=wrong_end, **common)


def test_instruction_prompt_overrides():
    prompts = instruction_prompts({"asr": "{audio} Write down what you hear."})
    assert (
        prompts["asr"] == "{audio} Write down what you hear." and prompts["ast"] == DEFAULT_INSTRUCTION_PROMPTS["ast"]
    )
    with pytest.raises(ValueError, match="has no {audio} slot"):
        instruction_prompts({"asr": "Transcribe."})


def test_zero_audio_tokens_leave_the_prompt_text_only(chatml):
    """Cross-attention models read the audio as a memory: the prompt carries no placeholders."""
    audio = chatml.token_to_id("<|audio|>")
    example = encode_example(chatml, instruction="asr", audio_token_counts=[0], placeholder_id=audio, target="hello")
    assert audio not in example.tokens.tolist()
    assert "Transcribe the audio." in chatml.decode(example.tokens.tolist())
    assert masked_text(chatml, example) == "hello<|im_end|>"
