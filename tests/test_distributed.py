"""Several processes from one command: DDP (gloo on the CPU), DataParallel, torchrun, SLURM."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchcamp.trainer import devices
from torchcamp.trainer.errors import UserError

# No augmentation: a rank's random crops cannot equal a single process's, so comparisons of
# weights across process layouts need deterministic inputs.
PLAIN = ("data.synthetic=true", "data.augment=false", "device=cpu", "trainer.max_epochs=2")
DDP2 = ("device=ddp", "device.devices=2", "device.accelerator=cpu")


def joined_rank_args(run_dir: Path) -> list[str]:
    """``-m torchcamp.trainer.app.cli`` arguments for a process that joins an existing DDP group."""
    return [
        "-m",
        "torchcamp.trainer.app.cli",
        *PLAIN,
        "device=ddp",
        "device.accelerator=cpu",
        f"hydra.run.dir={run_dir}",
        "trainer.progress=false",
    ]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:  # all-reduce sums in another order than one big batch: float tolerance
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def single_16(tmp_path_factory):
    """One process, batch 16: the reference for two ranks of 8."""
    cwd = tmp_path_factory.mktemp("single")
    run_dir = cwd / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torchcamp.trainer.app.cli",
            *PLAIN,
            "data.batch_size=16",
            f"hydra.run.dir={run_dir}",
            "trainer.progress=false",
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    return run_dir


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_same_global_batch(run_cli, single_16):
    result = run_cli(*PLAIN, *DDP2, "data.batch_size=8")
    assert result.metrics["world_size"] == 2 and result.metrics["global_step"] == 8
    assert_same_weights(result.run_dir, single_16)
    # Only rank 0 wrote: one event file, one metrics.json, one log voice.
    assert len(list((result.run_dir / "tb").glob("events.out.tfevents.*"))) == 1
    # best.pt and the top epoch's file are links to one of last.pt's versions.
    names = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
    assert len(names) == 3 and names[0] == "best.pt" and names[2] == "last.pt"
    assert names[1].startswith("epoch_00") and names[1].endswith(".pt")
    log = (result.run_dir / "train.log").read_text()
    assert "rank 0 of 2 joined the gloo process group" in log
    assert log.count("epoch 2/2") == 1


@pytest.mark.slow
def test_ddp_with_accumulation_matches_the_same_global_batch(run_cli, single_16):
    # 2 ranks x batch 4 x 2 micro-batches = 16 samples per optimizer step.
    result = run_cli(*PLAIN, *DDP2, "data.batch_size=4", "trainer.accumulate_grad_batches=2")
    assert result.metrics["global_step"] == 8
    assert_same_weights(result.run_dir, single_16)


@pytest.mark.slow
def test_ddp_stopped_by_a_signal_mid_epoch_resumes_where_it_stopped(
    tmp_path, run_cli, background_cli
):
    # SIGTERM (or Ctrl-C) reaches the launcher, which passes it on: every rank stops at the same
    # step boundary, rank 0 writes last.pt, exit 3; resume=auto ends as an unbroken run does,
    # early stopping included: every rank stops after epoch 2 of 3 (no accuracy can improve by
    # min_delta=2), with its counters carried across the resume.
    args = (
        *PLAIN,
        *DDP2,
        "data.batch_size=4",
        "callbacks.checkpoint.every_n_steps=1",
        "trainer.max_epochs=3",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=2",
    )
    straight = run_cli(*args)
    runs = tmp_path / "runs"
    job = (*args, "resume=auto", f"output_root={runs}")
    process = background_cli.start(tmp_path, *job, f"hydra.run.dir={runs}/a")
    background_cli.signal_at_step(process, runs / "a/checkpoints/last.pt", 5, signal.SIGTERM)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 3 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("stopped: stopped by SIGTERM: every rank")
    stopped = json.loads((runs / "a/metrics.json").read_text())
    assert stopped["status"] == "interrupted" and 5 <= stopped["global_step"] < 16
    run_cli(*job, f"hydra.run.dir={runs}/a")
    resumed = json.loads((runs / "a/metrics.json").read_text())  # the run continued in place
    assert straight.metrics["status"] == resumed["status"] == "early_stopped"
    assert straight.metrics["epoch"] == resumed["epoch"] == 2 and resumed["global_step"] == 16
    assert_same_weights(straight.run_dir, runs / "a")


@pytest.mark.slow
def test_uneven_shards_do_not_hang(run_cli):
    # 3 ranks: 64 training images pad to 66, and the 8 validation images split 3/3/2.
    started = time.perf_counter()
    result = run_cli(
        *PLAIN,
        "device=ddp",
        "device.devices=3",
        "data.batch_size=5",
        "data.num_workers=2",
        timeout=240,
    )
    assert result.metrics["world_size"] == 3 and result.metrics["epoch"] == 2
    # DataLoader workers of a rank must fork: spawned ones re-import torch every epoch, which
    # made this run take minutes instead of seconds.
    assert time.perf_counter() - started < 60


@pytest.mark.slow
def test_a_ddp_multirun_gives_one_directory_per_job(tmp_path, run_cli):
    run_cli(
        "-m", *PLAIN, *DDP2, "optimizer=sgd,adam", "trainer.max_epochs=1", "hydra.sweep.dir=sweep"
    )
    sweep = tmp_path / "sweep"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert all(row["world_size"] == "2" for row in rows)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="needs torchrun",
)
def test_under_torchrun_each_process_joins_instead_of_spawning(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    run_dir = tmp_path / "run"
    completed = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            *joined_rank_args(run_dir),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "starting 2 processes" not in completed.stdout  # joined, did not launch its own
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epoch"] == 2


@pytest.mark.slow
def test_data_parallel_runs_without_gpus(run_in_process):
    result = run_in_process(*PLAIN, "device=dp", "trainer.max_epochs=1")
    state = weights(result.run_dir)
    assert not any(name.startswith("module.") for name in state)  # saved unwrapped


@pytest.mark.slow
def test_a_checkpoint_with_a_module_prefix_loads(run_in_process, tmp_path):
    first = run_in_process(*PLAIN, "trainer.max_epochs=1")
    state = torch.load(first.run_dir / "checkpoints" / "last.pt", weights_only=True)
    state["model"] = {f"module.{k}": v for k, v in state["model"].items()}
    del state["checksum"]  # as another tool's file: no checksum, so none is checked
    prefixed = tmp_path / "prefixed.pt"
    torch.save(state, prefixed)
    resumed = run_in_process(*PLAIN, f"resume={prefixed}")
    assert resumed.metrics["epoch"] == 2


def test_launch_ddp_returns_rank_0s_metrics_and_raises_its_one_line_error(monkeypatch, tmp_path):
    """launch_ddp's own part with the process start left out (the tests above start them)."""
    from types import SimpleNamespace

    from torchcamp.trainer.app import ddp

    device = SimpleNamespace(accelerator="cpu", gpus=None, devices=2)
    settings = SimpleNamespace(device=device, run_dir=tmp_path)
    started = []

    def launch(worker, args, nprocs):
        started.append(nprocs)
        return {"val/acc": 1.0}

    monkeypatch.setattr(ddp.distributed, "launch", launch)
    assert ddp.launch_ddp(settings, print) == {"val/acc": 1.0} and started == [2]
    monkeypatch.setattr(ddp.distributed, "launch", lambda *args: {"error": "a rank said no"})
    with pytest.raises(UserError, match=r"^a rank said no$"):
        ddp.launch_ddp(settings, print)


def test_gpu_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    free = {0: 10, 1: 30, 2: 20}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free[i], 100))
    assert devices.choose_gpus("auto_free") == [1, 2, 0]
    assert devices.choose_gpus([0, 2]) == [0, 2]
    assert devices.choose_gpus(None) == [0, 1, 2]
    with pytest.raises(UserError, match=r"GPUs 0\.\.2 only"):
        devices.choose_gpus([3])
    assert devices.num_processes("all", [1, 2], cuda=True) == 2
    with pytest.raises(UserError, match=r"device\.devices=all counts GPUs"):
        devices.num_processes("all", [], cuda=False)


@pytest.fixture
def one_rank_group(monkeypatch):
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29533")
    dist.init_process_group(backend, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def batchnorm_model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def test_sync_batchnorm_on_cpu_is_refused(one_rank_group):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="sync_batchnorm=true needs CUDA"):
        devices.wrap_model(batchnorm_model(), "ddp", torch.device("cpu"), [], sync_batchnorm=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sync_batchnorm_is_converted_under_ddp_on_cuda(one_rank_group):
    device = torch.device("cuda", 0)
    wrapped = devices.wrap_model(batchnorm_model(), "ddp", device, [0], sync_batchnorm=True)
    assert isinstance(wrapped.module[1], torch.nn.SyncBatchNorm)
    wrapped(torch.randn(2, 3, 8, 8, device=device)).sum().backward()


@pytest.mark.slow
def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchcamp.trainer.app.cli",
            "hydra/launcher=slurm",
            "--cfg",
            "hydra",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "SlurmLauncher" in out and "tasks_per_node: 1" in out


@pytest.mark.slow
def test_slurm_tasks_join_one_process_group(tmp_path):
    """Two processes with the variables srun gives two tasks of one job: each is one rank."""
    pytest.importorskip("submitit", reason="needs the slurm extra")
    run_dir = tmp_path / "run"
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "localhost",
    }
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    tasks = [
        subprocess.Popen(
            [sys.executable, *joined_rank_args(run_dir)],
            cwd=tmp_path,
            env={**env, **slurm, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [task.communicate(timeout=240)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["global_step"] == 4  # 64 images, 2 ranks x batch 16: 2 steps an epoch
