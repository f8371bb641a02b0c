"""The trainer, generic over a ``Task`` (``task.py``): ``loop.train(task, config, data, workdir)``.

config.py (TrainConfig) · optim.py (AdamW, schedule, groups, freezing) · state.py (train state,
shardings, sharded init) · step.py (the jitted step) · checkpoint.py (orbax + data position) ·
signals.py (SIGTERM) · metrics.py (throughput, MFU, logs) · plots.py (learning curves).
"""
