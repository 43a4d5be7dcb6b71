"""TensorBoard logging's own costs: the per-step scalars kept and written in one go, and the
event checksum computed in C."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as python_crc
from tensorboard.summary.writer import record_writer

from torchcamp.trainer.callbacks.tensorboard import TensorBoardLogger, masked_crc32c
from torchcamp.trainer.extras import ExtrasBudget
from torchcamp.trainer.optimization import Optimization


@pytest.mark.parametrize("size", [0, 1, 7, 12, 120, 4097])
def test_the_event_checksum_is_tensorboards_own(size):
    data = os.urandom(size)
    assert masked_crc32c(data) == python_crc(data)
    assert record_writer.masked_crc32c is masked_crc32c  # what the event writer now calls


def test_step_scalars_are_written_at_their_steps_when_the_epoch_ends(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimization = Optimization(torch.optim.SGD(model.parameters(), lr=0.25))
    trainer = SimpleNamespace(
        global_step=0, log_every_n_steps=2, optimization=optimization, epoch=0, module=model,
        epoch_counts={}, max_epochs=1, fit_seconds=1.0, extras=ExtrasBudget(0.0),
    )  # fmt: skip
    logger = TensorBoardLogger(tmp_path)
    logger.on_fit_start(trainer)
    for step in range(1, 7):
        trainer.global_step = step
        logger.on_train_step_end(trainer, {"loss": torch.tensor(step / 10), "n": torch.ones(3)})
    assert len(logger._step_scalars) == 3  # kept as tensors, not written yet
    trainer.epoch = 1
    logger.on_epoch_end(trainer, {"train/loss": 0.5})
    logger.writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    losses = [(e.step, round(e.value, 6)) for e in events.Scalars("train/loss_step")]
    assert losses == [(2, 0.2), (4, 0.4), (6, 0.6)]
    assert [e.step for e in events.Scalars("lr/group0")] == [2, 4, 6]
    assert [e.value for e in events.Scalars("train/loss")] == [0.5]
