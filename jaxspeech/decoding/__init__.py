"""Decoding: greedy / sampling / beam search, LLM and audio-prompt generation, joint CTC, lexicons."""

# A lazy import: ``import jaxspeech.decoding`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.decoding.generate import GenerationConfig, generate, pad_prompts
    from jaxspeech.decoding.lexicon import TokenAutomaton, word_automaton
    from jaxspeech.decoding.search import DecodeOutput, beam_search, greedy_search, sample
    from jaxspeech.decoding.speech import decoding_params, generate_from_audio
