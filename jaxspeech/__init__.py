"""jaxspeech: Speech LLMs in JAX/Flax."""

from jaxspeech.platforms import quiet_absent_tpu

__version__ = "0.1.0"

quiet_absent_tpu()  # before any backend starts: no libtpu start-up errors on machines without a TPU
