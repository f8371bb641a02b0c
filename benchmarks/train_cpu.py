"""Train step of the tiny_asr Speech LLM on CPU: jaxspeech vs the same model in PyTorch (transformers).

Ours is exactly what ``jaxspeech train --config configs/tiny_asr.py`` trains, built through the
project's own code (``recipes.build.build``, then ``benchmarks.train_step.build_step``: the
layout, state and ``CompiledStep`` as the trainer makes them): a 4-block Conformer (d 144, 4 heads,
FFN 576, depthwise kernel 9, layer-norm conv module, 4x frame stacking + Dense front end, relative
positions) -> frame stacking by 4 + GELU MLP (576 -> 384 -> 192) -> a 3-layer Llama decoder (d 192,
4 heads, SwiGLU 512, tied embeddings, vocabulary 512) with the audio spliced in at the placeholder
tokens; loss = next-token cross-entropy (label smoothing 0.1) on the loss-masked tokens + 0.3 x CTC
on the encoder (blank = pad id); SpecAugment on, dropout as the config sets it (0 in tiny_asr);
AdamW (weight decay 0.01 except biases / norm scales, warmup + cosine schedule) with global-norm
clipping at 1.0.

The peer is the same network in PyTorch from transformers modules where they exist: Parakeet's
Conformer blocks (``ParakeetEncoder`` with its subsampling swapped for a frame-stacking Linear and
each conv module's BatchNorm1d swapped for a LayerNorm over channels, since Parakeet has no
layer-norm option; residual dropout added with forward hooks because Parakeet's blocks have none;
attention dropout and layerdrop 0 as in ours), a torch MLP connector, ``LlamaForCausalLM`` (sdpa)
fed ``inputs_embeds``, a Linear CTC head, ``torch.nn.functional.cross_entropy`` (label_smoothing)
+ ``torch.nn.functional.ctc_loss``, equivalent SpecAugment masks, ``torch.optim.AdamW`` (fused CPU
kernel when available) with the same groups and schedule, ``clip_grad_norm_``. Our initial weights
are copied into the peer, so parameter counts must match and both eval-mode losses (no dropout,
no SpecAugment) must agree on the same batch; train-mode losses differ only by the random masks.

Both train on one fixed batch (the pipeline's first batch of the ``--frames`` bucket, full run: features
[20, 1, 400, 80], tokens [20, 88]); the state is donated and rebound every step. Torch runs at its best
thread count; runs alternate and the median of per-pair ratios (peer time / our time) is reported.
Compile time is reported separately. MFU = analytic model FLOPs of one train step / median step
time / float32 matmul peak measured in the same run, with

  FLOPs(step) = 3 x forward, forward = sum over matmuls of 2 x multiply-adds at the padded shapes:
    front end   2 B T' (s F) D                                   T' = ceil(T / s), s = subsampling factor
    per block   2 B T' (2 x 2 D Dff + 4 D^2 + 2D D + D D + K D)   two FFNs, q/k/v/o, conv in/out, depthwise
                + 2 (2T'-1) D^2                                  position projection (once per batch)
                + 2 B H T' (2 T' + (2T'-1)) dh                   content scores, attention x values, position scores
    CTC head    2 B T' D V
    connector   2 B T'' (k D Hc + Hc E)                          T'' = ceil(T' / k), k = connector stack
    per layer   2 B L (4 E^2 + 3 E I) + 2 B H (2 L^2) dh_llm      q/k/v/o, SwiGLU; dense attention (no causal halving)
    LM head     2 B L E V
(backward counted as 2 x forward, including the input gradient of the first layer that is not
needed). XLA's own counts are reported only as cross-checks: ``CompiledStep.flops`` of the scanned
step counts each scanned layer body once (undercount); the unrolled gradient's count also
includes elementwise work.

  python -m benchmarks.train_cpu               # full run -> benchmarks/results/train_cpu.json
  python -m benchmarks.train_cpu --smoke       # 2 blocks, 1 LLM layer, 8 rows, 3 pairs: a quick check
  nice -n 19 python -m benchmarks.train_cpu --smoke --caveat "..."   # on a busy machine (noted in the JSON)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import linen as nn
from flax import traverse_util

from benchmarks.harness import alternating, best_torch_threads, machine_info, matmul_peak_gflops, timed, write_json
from benchmarks.train_step import build_step, load_batch
from jaxspeech.config_dict import load_config_file
from jaxspeech.recipes.build import build
from jaxspeech.tasks.speech_llm import SpeechLLMTask, ctc_min_frames, ctc_targets

CONFIG = "configs/tiny_asr.py"
FULL = dict(conformer_layers=None, llm_layers=None, rows=None, pairs=10, warmup=2, thread_repeats=3)
SMOKE = dict(conformer_layers=2, llm_layers=1, rows=8, pairs=3, warmup=1, thread_repeats=1)


# ----------------------------------------------------------------------------------------------
# Our side


def analytic_flops(model, batch) -> dict:
    """Forward matmul FLOPs per part at the batch's padded shapes and the train-step total (3x)."""
    enc, conn, llm = model.encoder.conformer, model.connector, model.llm
    b, clips, t, f = batch.features.shape
    b *= clips
    length = batch.tokens.shape[1]
    factor = enc.subsampling_factor
    t1 = -(-t // factor)
    t2 = -(-t1 // conn.stack)
    d, dff, k, h = enc.d_model, enc.ffn_hidden, enc.conv_kernel_size, enc.num_heads
    dh = d // h
    per_block = (
        2 * b * t1 * (2 * 2 * d * dff + 4 * d * d + 2 * d * d + d * d + k * d)
        + 2 * (2 * t1 - 1) * d * d
        + 2 * b * h * t1 * (2 * t1 + (2 * t1 - 1)) * dh
    )
    e, inter, v = llm.hidden_size, llm.intermediate_size, llm.vocab_size
    kv = llm.num_kv_heads * llm.resolved_head_dim
    per_layer = (
        2 * b * length * (2 * e * e + 2 * e * kv + 3 * e * inter)  # q, o; k, v; gate, up, down
        + 2 * b * llm.num_heads * 2 * length**2 * llm.resolved_head_dim  # scores, attention x values
    )
    parts = {
        "front_end": 2 * b * t1 * factor * f * d,
        "conformer_blocks": enc.num_layers * per_block,
        "ctc_head": 2 * b * t1 * d * model.ctc_vocab_size,
        "connector": 2 * b * t2 * (conn.stack * d * conn.hidden_size + conn.hidden_size * conn.output_size),
        "llm_layers": llm.num_layers * per_layer,
        "lm_head": 2 * b * length * e * v,
    }
    forward = sum(parts.values())
    return {"forward_by_part": parts, "forward": forward, "train_step": 3 * forward}


def xla_unrolled_grad_flops(run, batch) -> float | None:
    """XLA's FLOP count of value_and_grad(loss) with unrolled layers (a cross-check only)."""
    model = run.kind.model
    unrolled = model.replace(
        encoder=model.encoder.replace(conformer=model.encoder.conformer.replace(scan_layers=False)),
        llm=model.llm.replace(scan_layers=False),
    )
    task = SpeechLLMTask(unrolled, run.task.loss_config, run.task.spec_augment, run.task.lora)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jax.dtypes.canonicalize_dtype(x.dtype)), batch)
    params = nn.unbox(jax.eval_shape(lambda b: task.init_params(jax.random.key(0), b), shapes))
    grad = jax.value_and_grad(lambda p, bt: task.loss(p, bt, jax.random.key(0), train=True)[0])
    try:
        analysis = jax.jit(grad).lower(params, shapes).cost_analysis()
    except Exception:  # a backend without a cost model: the cross-check is simply left out
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0)) or None


# ----------------------------------------------------------------------------------------------
# The PyTorch peer


class StackSubsampling(torch.nn.Module):
    """8 frames concatenated (frames past each length zeroed) -> one Linear; replaces Parakeet's
    conv subsampling (its length arithmetic, ceil(T / 8), is the same)."""

    def __init__(self, factor: int, mels: int, width: int):
        super().__init__()
        self.factor = factor
        self.proj = torch.nn.Linear(factor * mels, width)

    def forward(self, input_features, attention_mask=None):
        batch, frames, mels = input_features.shape
        x = input_features
        if attention_mask is not None:
            x = x * attention_mask[:, :, None].to(x.dtype)
        padded = -(-frames // self.factor) * self.factor
        x = torch.nn.functional.pad(x, (0, 0, 0, padded - frames))
        return self.proj(x.reshape(batch, padded // self.factor, self.factor * mels))


class ChannelLayerNorm(torch.nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, T] tensor (in place of the conv module's BatchNorm1d)."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _residual_dropout(p: float):
    def hook(module, inputs, output):
        if isinstance(output, tuple):  # attention returns (output, weights)
            return (torch.nn.functional.dropout(output[0], p, module.training),) + tuple(output[1:])
        return torch.nn.functional.dropout(output, p, module.training)

    return hook


class PeerSpeechLLM(torch.nn.Module):
    """Conformer (transformers Parakeet blocks) -> frame-stack MLP -> LlamaForCausalLM, + CTC head."""

    def __init__(self, model, loss_config, spec_augment):
        super().__init__()
        enc, conn, llm = model.encoder.conformer, model.connector, model.llm
        if enc.subsampling != "stack" or enc.pos_encoding != "rel_pos" or model.fusion != "decoder_only":
            raise ValueError("the peer mirrors stack subsampling, rel_pos attention and decoder_only fusion only")
        self.factor, self.stack = enc.subsampling_factor, conn.stack
        self.placeholder_id, self.blank_id = model.placeholder_id, model.ctc_blank_id
        self.loss_config, self.spec_augment = loss_config, spec_augment
        encoder_config = transformers.ParakeetEncoderConfig(
            hidden_size=enc.d_model, num_hidden_layers=enc.num_layers, num_attention_heads=enc.num_heads,
            intermediate_size=enc.ffn_hidden, hidden_act=enc.activation, conv_kernel_size=enc.conv_kernel_size,
            subsampling_factor=enc.subsampling_factor, num_mel_bins=enc.input_dim, scale_input=enc.xscaling,
            attention_bias=enc.attention_bias, convolution_bias=enc.conv_bias, dropout=enc.dropout_rate,
            activation_dropout=enc.ffn_dropout_rate, attention_dropout=0.0, dropout_positions=enc.pos_dropout_rate,
            layerdrop=0.0, attn_implementation="sdpa",
        )  # fmt: skip
        self.encoder = transformers.ParakeetEncoder(encoder_config)
        self.encoder.subsampling = StackSubsampling(enc.subsampling_factor, enc.input_dim, enc.d_model)
        for block in self.encoder.layers:
            if enc.conv_norm == "layer_norm":
                block.conv.norm = ChannelLayerNorm(enc.d_model, eps=enc.norm_eps)
            for name in ("feed_forward1", "self_attn", "conv", "feed_forward2"):
                getattr(block, name).register_forward_hook(_residual_dropout(enc.dropout_rate))
        self.connector = torch.nn.Sequential(
            torch.nn.Linear(conn.stack * enc.d_model, conn.hidden_size),
            torch.nn.GELU(approximate="none" if conn.act == "gelu" else "tanh"),
            torch.nn.Linear(conn.hidden_size, conn.output_size),
        )
        llm_config = transformers.LlamaConfig(
            vocab_size=llm.vocab_size, hidden_size=llm.hidden_size, intermediate_size=llm.intermediate_size,
            num_hidden_layers=llm.num_layers, num_attention_heads=llm.num_heads, num_key_value_heads=llm.num_kv_heads,
            head_dim=llm.resolved_head_dim, rms_norm_eps=llm.rms_norm_eps, hidden_act=llm.hidden_act,
            rope_parameters={"rope_type": "default", "rope_theta": llm.rope.theta},
            max_position_embeddings=llm.max_position_embeddings, tie_word_embeddings=llm.tie_word_embeddings,
            attention_bias=llm.attention_bias, mlp_bias=llm.mlp_bias, attention_dropout=0.0, attn_implementation="sdpa",
        )  # fmt: skip
        self.llm = transformers.LlamaForCausalLM(llm_config)
        self.ctc_head = torch.nn.Linear(enc.d_model, model.ctc_vocab_size)

    def augment(self, features, lengths):
        """SpecAugment as ``jaxspeech.features.specaugment`` does it: per example, ``num`` bands of
        width uniform in [0, max] at a uniform start, inside the valid frames only."""
        c = self.spec_augment
        batch, frames, bins = features.shape

        def bands(num, max_width, limit, size):
            widths = torch.floor(torch.rand(batch, num) * (max_width[:, None] + 1))
            starts = torch.floor(torch.rand(batch, num) * (limit[:, None] - widths + 1))
            position = torch.arange(size)[None, None, :]
            return ((position >= starts[..., None]) & (position < (starts + widths)[..., None])).any(dim=1)

        limit = torch.full((batch,), bins)
        freq = bands(c.num_freq_masks, torch.full((batch,), min(c.max_freq_width, bins)), limit, bins)
        time_width = torch.clamp(lengths, max=c.max_time_width)
        if c.max_time_ratio is not None:
            time_width = torch.minimum(time_width, torch.floor(c.max_time_ratio * lengths).long())
        time_mask = bands(c.num_time_masks, time_width, lengths, frames)
        valid = torch.arange(frames)[None, :] < lengths[:, None]
        masked = (time_mask[:, :, None] | freq[:, None, :]) & valid[:, :, None]
        return features.masked_fill(masked, c.mask_value)

    def loss(self, x: dict) -> tuple[torch.Tensor, dict]:
        features, lengths = x["features"], x["lengths"]
        if self.training and self.spec_augment is not None:
            features = self.augment(features, lengths)
        frame_mask = torch.arange(features.shape[1])[None, :] < lengths[:, None]
        hidden = self.encoder(features, attention_mask=frame_mask.long()).last_hidden_state
        enc_lengths = torch.div(lengths + self.factor - 1, self.factor, rounding_mode="floor")
        hidden = hidden * (torch.arange(hidden.shape[1])[None, :] < enc_lengths[:, None])[..., None]

        batch, frames, width = hidden.shape
        padded = -(-frames // self.stack) * self.stack
        stacked = torch.nn.functional.pad(hidden, (0, 0, 0, padded - frames)).reshape(batch, padded // self.stack, -1)
        audio = self.connector(stacked)
        audio_lengths = torch.div(enc_lengths + self.stack - 1, self.stack, rounding_mode="floor")
        audio_valid = torch.arange(audio.shape[1])[None, :] < audio_lengths[:, None]

        tokens = x["tokens"]
        embeds = self.llm.get_input_embeddings()(tokens)
        is_audio = (tokens == self.placeholder_id)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(is_audio, audio[audio_valid])
        logits = self.llm(
            inputs_embeds=embeds, attention_mask=x["attention_mask"], position_ids=x["positions"], use_cache=False
        ).logits

        cfg = self.loss_config
        weights = x["loss_mask"][:, 1:]
        count = weights.sum().clamp(min=1.0)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1),
            reduction="none", label_smoothing=cfg.label_smoothing,
        )  # fmt: skip
        token_loss = (nll * weights.reshape(-1)).sum() / count

        log_probs = torch.log_softmax(self.ctc_head(hidden).float(), dim=-1).transpose(0, 1)
        per_row = torch.nn.functional.ctc_loss(
            log_probs, x["ctc_labels"], enc_lengths, x["ctc_label_lengths"], blank=self.blank_id,
            reduction="none", zero_infinity=True,
        )  # fmt: skip
        ctc_loss = torch.where(x["ctc_feasible"], per_row, torch.zeros_like(per_row)).sum() / count
        total = token_loss + cfg.ctc_weight * ctc_loss
        return total, {"token_loss": token_loss.detach(), "ctc_loss": ctc_loss.detach()}


def torch_inputs(batch, loss_config, subsampling_factor: int) -> dict:
    """The numpy batch as torch tensors (C = 1 clip per row) plus the CTC targets and which rows can
    align (the rule of ``SpeechLLMTask.loss``), prepared once outside the timed step."""
    tokens, loss_mask = jnp.asarray(batch.tokens), jnp.asarray(batch.loss_mask)
    labels, paddings = ctc_targets(tokens, loss_mask, loss_config.eos_ids)
    min_frames = np.asarray(ctc_min_frames(labels, paddings))
    label_lengths = np.asarray((paddings == 0).sum(axis=1))
    lengths = np.asarray(batch.feature_lengths)[:, 0].astype(np.int64)
    encoder_lengths = -(-lengths // subsampling_factor)
    feasible = (encoder_lengths > 0) & (min_frames <= encoder_lengths)
    return {
        "features": torch.from_numpy(np.ascontiguousarray(batch.features[:, 0])),
        "lengths": torch.from_numpy(lengths),
        "tokens": torch.from_numpy(np.asarray(batch.tokens, np.int64)),
        "positions": torch.from_numpy(np.asarray(batch.positions, np.int64)),
        "attention_mask": torch.from_numpy((np.asarray(batch.segment_ids) != 0).astype(np.int64)),
        "loss_mask": torch.from_numpy(np.asarray(batch.loss_mask, np.float32)),
        "ctc_labels": torch.from_numpy(np.asarray(labels, np.int64)),
        "ctc_label_lengths": torch.from_numpy(label_lengths.astype(np.int64)),
        "ctc_feasible": torch.from_numpy(feasible),
    }


def port_weights(params, peer: PeerSpeechLLM, no_decay_rules) -> dict[str, bool]:
    """Copies our parameters into the peer (every tensor on both sides must be used exactly once);
    returns {peer parameter name: decayed?} by our optimizer's no-decay rules on our path."""
    flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(params), sep="/").items()}
    heads = peer.encoder.config.num_attention_heads
    linear, same = (lambda a: a.T), (lambda a: a)
    pointwise = lambda a: a.T[:, :, None]  # [in, out] -> Conv1d [out, in, 1]
    depthwise = lambda a: a.T[:, None, :]  # [K, C] -> Conv1d [C, 1, K]
    per_head = lambda a: a.reshape(heads, -1)  # [H * dh] -> [H, dh]
    # (peer name inside a Parakeet block, our path inside encoder/conformer/layers, conversion)
    block = [
        (f"{hf}.{lin_hf}.{p_hf}", f"{ours}/{lin}/{p}", linear if p == "kernel" else same)
        for ours, hf in (("ffn1", "feed_forward1"), ("ffn2", "feed_forward2"))
        for lin, lin_hf in (("fc1", "linear1"), ("fc2", "linear2"))
        for p, p_hf in (("kernel", "weight"), ("bias", "bias"))
    ]
    block += [
        (f"self_attn.{proj}.{p_hf}", f"attention/{proj}/{p}", linear if p == "kernel" else same)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj")
        for p, p_hf in (("kernel", "weight"), ("bias", "bias"))
    ]
    block += [
        ("self_attn.relative_k_proj.weight", "attention/pos_proj/kernel", linear),
        ("self_attn.bias_u", "attention/pos_bias_u", per_head),
        ("self_attn.bias_v", "attention/pos_bias_v", per_head),
        ("conv.pointwise_conv1.weight", "conv/pointwise_in/kernel", pointwise),
        ("conv.pointwise_conv1.bias", "conv/pointwise_in/bias", same),
        ("conv.depthwise_conv.weight", "conv/depthwise/kernel", depthwise),
        ("conv.depthwise_conv.bias", "conv/depthwise/bias", same),
        ("conv.norm.weight", "conv/norm/scale", same),
        ("conv.norm.bias", "conv/norm/bias", same),
        ("conv.pointwise_conv2.weight", "conv/pointwise_out/kernel", pointwise),
        ("conv.pointwise_conv2.bias", "conv/pointwise_out/bias", same),
    ]
    norms = (("norm_ffn1", "norm_feed_forward1"), ("norm_attention", "norm_self_att"), ("norm_conv", "norm_conv"),
             ("norm_ffn2", "norm_feed_forward2"), ("norm_out", "norm_out"))  # fmt: skip
    block += [
        (f"{hf}.{p_hf}", f"{ours}/{p}", same)
        for ours, hf in norms
        for p, p_hf in (("scale", "weight"), ("bias", "bias"))
    ]
    # (peer name inside a Llama layer, our path inside llm/layers, conversion)
    llm_layer = [
        ("input_layernorm.weight", "input_layernorm/scale", same),
        ("post_attention_layernorm.weight", "post_attention_layernorm/scale", same),
    ]
    llm_layer += [
        (f"self_attn.{p}.weight", f"self_attn/{p}/kernel", linear) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
    ]
    llm_layer += [(f"mlp.{p}.weight", f"mlp/{p}/kernel", linear) for p in ("gate_proj", "up_proj", "down_proj")]
    rows = [
        ("encoder.subsampling.proj.weight", "encoder/conformer/subsampling/proj/kernel", linear, None),
        ("encoder.subsampling.proj.bias", "encoder/conformer/subsampling/proj/bias", same, None),
        ("connector.0.weight", "connector/mlp/fc1/kernel", linear, None),
        ("connector.0.bias", "connector/mlp/fc1/bias", same, None),
        ("connector.2.weight", "connector/mlp/fc2/kernel", linear, None),
        ("connector.2.bias", "connector/mlp/fc2/bias", same, None),
        ("ctc_head.weight", "ctc_head/kernel", linear, None),
        ("ctc_head.bias", "ctc_head/bias", same, None),
        ("llm.model.embed_tokens.weight", "llm/embed_tokens/embedding", same, None),  # tied: also the LM head
        ("llm.model.norm.weight", "llm/norm/scale", same, None),
    ]
    for i in range(len(peer.encoder.layers)):
        rows += [(f"encoder.layers.{i}.{hf}", f"encoder/conformer/layers/{ours}", fn, i) for hf, ours, fn in block]
    for i in range(len(peer.llm.model.layers)):
        rows += [(f"llm.model.layers.{i}.{hf}", f"llm/layers/{ours}", fn, i) for hf, ours, fn in llm_layer]

    named = dict(peer.named_parameters())
    state, used, decayed = {}, set(), {}
    rules = [re.compile(r) for r in no_decay_rules]
    for hf, ours, fn, layer in rows:
        value = flat[ours] if layer is None else flat[ours][layer]
        value = np.ascontiguousarray(fn(value))
        if tuple(value.shape) != tuple(named[hf].shape):
            raise ValueError(f"{ours} -> {hf}: shape {value.shape} vs {tuple(named[hf].shape)}")
        state[hf] = torch.from_numpy(value.astype(np.float32))
        used.add(ours)
        decayed[hf] = not any(r.fullmatch(ours) for r in rules)
    missing = sorted(set(named) - set(state))
    unused = sorted(set(flat) - used)
    if missing or unused:
        raise ValueError(f"weight port incomplete: peer parameters without a source {missing[:8]}, unused {unused[:8]}")
    with torch.no_grad():
        for name, value in state.items():
            named[name].copy_(value)
    return decayed


def make_optimizer(peer: PeerSpeechLLM, decayed: dict[str, bool], config):
    """torch AdamW with our groups (no decay on biases / norm scales) and our warmup + cosine schedule."""
    named = dict(peer.named_parameters())
    groups = [
        {"params": [p for n, p in named.items() if decayed[n]], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named.items() if not decayed[n]], "weight_decay": 0.0},
    ]
    kwargs = dict(lr=config.learning_rate, betas=(config.b1, config.b2), eps=config.eps)
    try:
        optimizer, impl = torch.optim.AdamW(groups, fused=True, **kwargs), "fused"
    except (RuntimeError, TypeError):
        optimizer, impl = torch.optim.AdamW(groups, **kwargs), "default"

    def factor(count: int) -> float:
        warmup = min(1.0, (count + 1.0) / config.warmup_steps) if config.warmup_steps else 1.0
        if config.decay_steps is None:
            return warmup
        progress = min(max((count - config.warmup_steps) / (config.decay_steps - config.warmup_steps), 0.0), 1.0)
        end = config.end_lr_fraction
        return warmup * (end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), impl


# ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="2 Conformer blocks, 1 LLM layer, 8 rows, 3 pairs")
    parser.add_argument(
        "--frames", type=int, default=400, help="the duration bucket (log-mel frames) of the timed batch"
    )
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--caveat", default=None, help="a note stored in the JSON (e.g. 'machine busy')")
    parser.add_argument("--out", default="benchmarks/results/train_cpu.json")
    args = parser.parse_args()
    size = SMOKE if args.smoke else FULL
    pairs = args.pairs or size["pairs"]
    load_at_start = os.getloadavg()

    config = load_config_file(CONFIG)
    if size["conformer_layers"]:
        config.model.encoder.conformer.num_layers = size["conformer_layers"]
    if size["llm_layers"]:
        config.model.llm.num_layers = size["llm_layers"]
    run = build(config, progress=False)
    batch = load_batch(run, args.frames, size["rows"])
    model, task = run.kind.model, run.task

    # --- ours: what `jaxspeech train` compiles and runs
    built = build_step(run, batch)
    step, state, fn, device_batch, compile_s = built.step, built.state, built.run, built.device_batch, built.compile_s
    del built  # the state is donated at every step: no other reference may keep the first one alive
    ours_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state["params"]))
    eval_loss = jax.jit(lambda p, b: task.loss(p, b, jax.random.key(0), train=False))
    ours_eval_loss, ours_eval_metrics = jax.device_get(eval_loss(state["params"], device_batch))

    # --- peer: same architecture, our initial weights
    torch.manual_seed(0)
    peer = PeerSpeechLLM(model, task.loss_config, task.spec_augment)
    decayed = port_weights(state["params"], peer, run.train.optimizer.no_decay_rules)
    peer_params = sum(p.numel() for p in peer.parameters())
    if peer_params != ours_params:
        raise RuntimeError(f"parameter counts differ: ours {ours_params}, peer {peer_params}")
    inputs = torch_inputs(batch, task.loss_config, model.encoder.conformer.subsampling_factor)
    peer.eval()
    with torch.no_grad():
        peer_eval_loss, peer_eval_parts = peer.loss(inputs)
    peer.train()
    optimizer, scheduler, optimizer_impl = make_optimizer(peer, decayed, run.train.optimizer)
    clip = run.train.optimizer.grad_clip_norm
    trainable = [p for p in peer.parameters() if p.requires_grad]

    holder = {"state": state}
    del state
    first_losses = {}

    def ours():
        new_state, metrics = fn(holder["state"], device_batch)
        holder["state"] = new_state
        jax.block_until_ready((new_state, metrics))
        if "ours" not in first_losses:
            first_losses["ours"] = float(metrics["loss"])

    def peer_step():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = peer.loss(inputs)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(trainable, clip) if clip else torch.zeros(())
        if torch.isfinite(loss) and torch.isfinite(norm):
            optimizer.step()
        scheduler.step()
        if "peer" not in first_losses:
            first_losses["peer"] = float(loss.detach())

    first_run_s = timed(ours)
    peer_first_run_s = timed(peer_step)
    threads = best_torch_threads(peer_step, repeats=size["thread_repeats"])
    timing = alternating(ours, peer_step, pairs=pairs, warmup=size["warmup"])
    peak = matmul_peak_gflops()

    flops = analytic_flops(model, batch)
    xla_scanned = step.flops.get(step.shape_key(batch))
    xla_unrolled = xla_unrolled_grad_flops(run, batch)
    gflops = flops["train_step"] / timing["ours_median_s"] / 1e9
    peer_gflops = flops["train_step"] / timing["peer_median_s"] / 1e9
    rows, clips, frames, mels = batch.features.shape
    caveats = [c for c in (args.caveat,) if c]
    if load_at_start[0] > 0.5:
        caveats.append(f"machine busy: 1-min load average {load_at_start[0]:.2f} on {os.cpu_count()} cores at start")
    enc, llm = model.encoder.conformer, model.llm
    result = {
        "machine": machine_info(),
        "run": {
            "command": shlex.join(["python", "-m", "benchmarks.train_cpu", *sys.argv[1:]]),
            "smoke": args.smoke, "niceness": os.nice(0), "load_average_at_start": list(load_at_start),
            "torch": torch.__version__, "transformers": transformers.__version__,
        },
        **({"caveat": "; ".join(caveats)} if caveats else {}),
        "model": {
            "config": CONFIG + (" (smoke: fewer layers)" if args.smoke else ""),
            "conformer": {"blocks": enc.num_layers, "d_model": enc.d_model, "heads": enc.num_heads, "ffn": enc.ffn_hidden,
                          "conv_kernel": enc.conv_kernel_size, "conv_norm": enc.conv_norm,
                          "subsampling": f"stack {enc.subsampling_factor} frames + Dense"},
            "connector": {"stack": model.connector.stack, "hidden": model.connector.hidden_size, "act": model.connector.act},
            "llm": {"layers": llm.num_layers, "hidden": llm.hidden_size, "intermediate": llm.intermediate_size,
                    "heads": llm.num_heads, "kv_heads": llm.num_kv_heads, "vocab": llm.vocab_size,
                    "tied_embeddings": llm.tie_word_embeddings},
            "params_ours": ours_params, "params_peer": peer_params,
            "peer": "transformers ParakeetEncoder blocks (stack Linear front end, conv-module LayerNorm, residual-dropout "
                    "hooks) + torch MLP connector + LlamaForCausalLM (sdpa) + Linear CTC head; torch.optim.AdamW",
        },  # fmt: skip
        "batch": {
            "features": [rows, clips, frames, mels], "tokens": list(batch.tokens.shape),
            "feature_lengths": np.asarray(batch.feature_lengths)[:, 0].tolist(),
            "target_tokens": int(np.asarray(batch.loss_mask)[:, 1:].sum()),
            "ctc_infeasible_rows": int((~inputs["ctc_feasible"]).sum()),
        },
        "weights": "ours (init_state, seed 0) copied into the peer",
        "timing": "ours: the CompiledStep executable on the device batch, state donated and rebound; peer: eager "
                  "zero_grad/forward/backward/clip/AdamW step/scheduler step on tensors made once; both in train mode "
                  "(dropout, SpecAugment); same fixed batch every step",
        "loss_eval_mode": {"ours": float(ours_eval_loss), "peer": float(peer_eval_loss),
                           "abs_diff": abs(float(ours_eval_loss) - float(peer_eval_loss)),
                           "ours_ctc": float(ours_eval_metrics["ctc_loss"]), "peer_ctc": float(peer_eval_parts["ctc_loss"])},
        "loss_first_train_step": {"ours": first_losses.get("ours"), "peer": first_losses.get("peer"),
                                  "note": "train mode: dropout and SpecAugment masks are random, so these differ"},
        "compile_s": compile_s,
        "ours_first_run_s": first_run_s,
        "peer_first_run_s": peer_first_run_s,
        "torch_threads": threads,
        "torch_adamw": optimizer_impl,
        "jax_devices": jax.local_device_count(),
        **timing,
        "analytic_gflop_per_step": flops["train_step"] / 1e9,
        "analytic_forward_gflop_by_part": {k: v / 1e9 for k, v in flops["forward_by_part"].items()},
        "xla_gflop_scanned_step_crosscheck": None if xla_scanned is None else xla_scanned / 1e9,
        "xla_gflop_unrolled_grad_crosscheck": None if xla_unrolled is None else xla_unrolled / 1e9,
        "ours_gflops": gflops,
        "peer_gflops": peer_gflops,
        "matmul_peak_gflops": peak,
        "mfu_ours": gflops / peak,
        "mfu_peer": peer_gflops / peak,
    }  # fmt: skip
    print(
        f"step: ours {timing['ours_median_s'] * 1e3:.0f} ms, torch {timing['peer_median_s'] * 1e3:.0f} ms "
        f"({threads} threads): x{timing['speedup_median']:.2f}; {gflops:.1f} GFLOP/s = MFU {100 * gflops / peak:.1f}% "
        f"of {peak:.0f} GFLOP/s; compile {compile_s:.1f} s; params {ours_params} = {peer_params}; eval loss "
        f"{float(ours_eval_loss):.5f} vs {float(peer_eval_loss):.5f}",
        flush=True,
    )
    write_json(args.out, result)


if __name__ == "__main__":
    main()
