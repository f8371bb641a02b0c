"""Building blocks shared by encoders, connectors and decoders."""

# A lazy import: ``import jaxspeech.layers`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.layers.attention import Attention
    from jaxspeech.layers.dense import Dense
    from jaxspeech.layers.embeddings import Embed
    from jaxspeech.layers.lora import LoraConfig, lora, merge_lora
    from jaxspeech.layers.mlp import GatedMLP, MLP
    from jaxspeech.layers.norms import LayerNorm, RMSNorm
    from jaxspeech.layers.rope import RopeConfig, apply_rope
