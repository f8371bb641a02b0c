"""``jaxspeech plan``: a run's memory, speed and batch sizes on a TPU slice, before any TPU is rented.

The config's real train step is compiled ahead of time for the slice (libtpu's compiler runs on
any machine: ``sharding/topology.py``) from shapes alone, and the compiled programs give per-chip
memory; the search (``search.py``) picks the mesh (``mesh_choice.py``), the remat policy and each
duration bucket's largest batch within the HBM headroom; ``estimate.py`` estimates step time and MFU; ``plan.json``
(``plan_file.py``) carries the choice to ``jaxspeech train --plan``.
"""
