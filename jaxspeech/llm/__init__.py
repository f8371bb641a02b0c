"""The decoder LLM (Llama / Qwen2 family) and its KV cache."""

# A lazy import: ``import jaxspeech.llm`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.llm.config import LLMConfig
    from jaxspeech.llm.decoder import DecoderLM
    from jaxspeech.llm.kv_cache import KVCache, init_cache
