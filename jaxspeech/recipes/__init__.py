"""The one recipe: an experiment config (``configs/*.py``) -> a built ``Run`` (``build.py``) -> trained,
evaluated and reported (``run.py``), for every task kind; runs started from other runs (``from_run.py``) and
staged runs (``stages.py``); reopening a run (``restore.py``) and
transcribing with it (``transcriber.py``, ``longform.py``)."""

# A lazy import: ``import jaxspeech.recipes`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.recipes.build import Run, build
    from jaxspeech.recipes.restore import restore
    from jaxspeech.recipes.run import train_and_evaluate
    from jaxspeech.recipes.stages import train_stages
