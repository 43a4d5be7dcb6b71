"""Each invalid value stops the CLI before any work with one line and exit code 2."""

from __future__ import annotations

import pytest
import torch

CASES = [
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0"),
    (["trainer.precision=fp8"], "trainer.precision=fp8"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs=abc"),
    (["trainer.monitor_mode=up"], "trainer.monitor_mode=up"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["optimizer=nope"], "unknown optimizer option 'nope': choose one of adadelta"),
    (["trainer.nope=1"], "trainer.nope"),
    (["+optimizer.nope=1", "data.synthetic=true"], "cannot build optimizer"),
    (["resume=missing.pt"], "resume=missing.pt"),
    (["data.root=does-not-exist"], "RMB data not found under data.root=does-not-exist"),
]
if not torch.cuda.is_available():
    CASES += [
        (["trainer.precision=16-mixed"], "trainer.precision=16-mixed needs CUDA"),
        (["device=cuda"], "device=cuda but CUDA is not available"),
    ]


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_invalid_value_gives_one_line_and_exit_2(run_cli, args, expected):
    result = run_cli(*args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    # Nothing was trained: no checkpoint, no metrics.
    assert not (result.run_dir / "checkpoints").exists()
    assert not (result.run_dir / "metrics.json").exists()
