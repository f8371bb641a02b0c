"""The trainer, generic over a ``Task`` (``task.py``): ``loop.train(task, config, data, workdir)``.

config.py (TrainConfig) · optim.py (AdamW, schedule, groups, freezing) · state.py (train state,
shardings, sharded init) · step.py (the jitted step) · checkpoint.py (orbax + data position) ·
signals.py (SIGTERM) · metrics.py (throughput, MFU, logs) · plots.py (learning curves).
"""

# A lazy import: ``import jaxspeech.train`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.train.config import TrainConfig, train_config_from_dict
    from jaxspeech.train.hooks import FunctionHook, StepContext
    from jaxspeech.train.loop import TrainResult, train
    from jaxspeech.train.optim import OptimizerConfig
    from jaxspeech.train.task import Task
