"""Tasks: a module per task that defines ``TASK = Task(...)`` (see :mod:`.contract`); a task
config names the module in ``task.module``. Models are in :mod:`.models`, losses in
:mod:`.losses`."""

from torchcamp.tasks.contract import ModelInputs, PredictOptions, Task

__all__ = ["ModelInputs", "PredictOptions", "Task"]
