"""Small Speech-LLM configs for planner tests: configs/slam_asr.py's debug variant with widths
whose attention heads are 128 wide (what TPU kernels tile well), bf16 compute, scanned layers."""

from jaxspeech.config_dict import load_config_file, override

OPTIONS = dict(dtype="bfloat16", param_dtype="float32", scan_layers=True, remat_policy="none")


def small_speech_llm(attn_impl: str = "pallas", **sets):
    """configs/slam_asr.py:debug at 2 layers, 128-wide heads; ``sets`` are dotted overrides."""
    config = load_config_file("configs/slam_asr.py:debug")
    config.init.random = dict(
        encoder=dict(n_mels=80, d_model=256, num_layers=2, num_heads=2, ffn_dim=512, max_source_positions=300),
        llm=dict(
            hidden_size=256,
            intermediate_size=512,
            num_layers=2,
            num_heads=2,
            num_kv_heads=1,
            qkv_bias=True,
            tie_word_embeddings=True,
        ),
    )
    config.model.encoder.whisper = dict(OPTIONS, attn_impl=attn_impl)
    config.model.llm = dict(OPTIONS, attn_impl=attn_impl)
    config.model.connector.hidden_size = 256
    config.data.pipeline.update(bucket_frames=(300, 600), max_tokens=(96, 160))
    for key, value in sets.items():
        override(config, key, value)
    return config
