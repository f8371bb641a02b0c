"""Connectors from encoder states to the LLM: projectors, the window Q-Former, gated cross-attention."""

# A lazy import: ``import jaxspeech.connectors`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.connectors.config import (
        ConnectorConfig,
        ConvConnectorConfig,
        FrameStackConnectorConfig,
        LinearConnectorConfig,
        QFormerConnectorConfig,
        connector_config,
    )
    from jaxspeech.connectors.cross_attention import CrossAttentionConfig, GatedCrossAttention
    from jaxspeech.connectors.projector import Projector
    from jaxspeech.connectors.qformer import WindowQFormer
