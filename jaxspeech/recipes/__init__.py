"""The one recipe: an experiment config (``configs/*.py``) -> a built ``Run`` (``build.py``) -> trained,
evaluated and reported (``run.py``), for every task kind; reopening a run (``restore.py``) and
transcribing with it (``transcriber.py``, ``longform.py``)."""
