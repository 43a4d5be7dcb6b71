"""``logger=mlflow`` against a real MLflow tracking server (``mlflow server`` on localhost with
a SQLite store), read back through MLflow's client: the same scalars as TensorBoard at the same
steps, params, tags and artifacts; a run killed and resumed continues its MLflow run with no
step twice; a sweep's jobs are runs of one experiment; a user's mistakes are one line, exit 2.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow", reason="needs the mlflow extra")

# After the skip: these import mlflow.
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from torchcamp.trainer.app.callbacks import flatten
from torchcamp.trainer.callbacks.mlflow_logger import (
    PARAM_VALUE_LENGTH,
    chunks,
    clip,
    mlflow_key,
)
from torchcamp.trainer.checkpoint import load_checkpoint

# rmb's stand-in data: 64 training images; batches of 16 are 4 optimizer steps an epoch.
FAST = [
    "task=rmb",
    "data.synthetic=true",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "~callbacks.model_views",
    "logger=mlflow",
]
TWO_EPOCHS = [*FAST[:2], "trainer.max_epochs=2", *FAST[3:]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``mlflow server`` on a free localhost port, its runs in SQLite and its artifacts in a
    folder (served over HTTP, as to a remote user), started in the background."""

    def __init__(self, root: Path) -> None:
        port = free_port()
        self.uri = f"http://127.0.0.1:{port}"
        self.log_path = root / "server.log"
        command = [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
            *("--artifacts-destination", str(root / "artifacts")),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ]
        # No job runner (three more processes, for features these tests do not use).
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log_path, "w") as log:
            # In a session of its own: `mlflow server` runs the web server as its child, and
            # stop() ends both at once.
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
                start_new_session=True,
            )
        self.answered = False

    def ready(self, timeout: float = 90) -> str:
        """The URI, once ``/health`` answers; a failure with the server's log if it exits or
        is late."""
        deadline = time.monotonic() + timeout
        while not self.answered and time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited {self.process.returncode}:\n{self._log()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as answer:
                    self.answered = answer.status == 200
            except OSError:
                time.sleep(0.1)
        if not self.answered:
            pytest.fail(f"mlflow server not ready after {timeout} s:\n{self._log()}")
        return self.uri

    def stop(self) -> None:
        """Kill the server and its web server child (their store is thrown away: no need to
        wait a second for a graceful shutdown)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def _log(self) -> str:
        return self.log_path.read_text()[-3000:]


@pytest.fixture(scope="module", autouse=True)
def started_server(request, tmp_path_factory) -> Iterator[Server | None]:
    """One server for the module, started with its first test (the server takes seconds to
    start: the tests that need none run first, meanwhile) and stopped after its last; none
    where no test that runs needs it (``pytest -m "not slow"``)."""
    here = [item for item in request.session.items if item.module is request.module]
    if not any("server" in item.fixturenames for item in here):
        yield None
        return
    server = Server(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture
def server(started_server) -> str:
    """The tracking server's URI, once it answers."""
    return started_server.ready()


def only_run(client: MlflowClient, experiment: str):
    """The one run of ``experiment``."""
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def history(client: MlflowClient, run_id: str, key: str) -> list[Metric]:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for the run (purged steps of a resume left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def assert_same_scalars(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    """MLflow has every TensorBoard scalar, at the same steps, with the same values (TensorBoard
    keeps float32), and nothing else."""
    expected = tensorboard_scalars(run_dir)
    assert set(client.get_run(run_id).data.metrics) == set(expected)
    for tag, points in expected.items():
        logged = [(m.step, float(np.float32(m.value))) for m in history(client, run_id, tag)]
        assert logged == points, tag


# ---- a user's mistakes (no server needed: these run while it starts) -----------------------


def one_line_error(result) -> str:
    """The one line a user's mistake ends in: exit 2, no traceback, nothing trained."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert not (result.run_dir / "tb").exists()  # stopped before training
    return line


def test_no_server_at_the_uri_is_one_line_naming_it_and_the_fix(run_in_process, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    line = one_line_error(run_in_process(*FAST, check=False))
    assert line.startswith(f"error: MLFLOW_TRACKING_URI={uri}: no MLflow tracking server answers")
    assert "mlflow server --host 127.0.0.1" in line and "logger.tracking_uri" in line


def test_a_uri_mlflow_cannot_use_is_one_line(run_in_process, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    line = one_line_error(run_in_process(*FAST, "logger.tracking_uri=localhost:5000", check=False))
    assert line.startswith("error: logger.tracking_uri=localhost:5000 is not a tracking URI")
    assert "http://HOST:PORT" in line


def test_mlflow_not_installed_is_one_line_saying_how_to_install_it(run_in_process, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    line = one_line_error(run_in_process(*FAST, check=False))
    assert line == (
        "error: logger=mlflow needs the mlflow package, which is not installed: "
        "pip install 'torchcamp[mlflow]' (or train without logger=mlflow)"
    )


def test_keys_values_and_batches_are_cut_to_mlflows_limits():
    assert mlflow_key("best/val/acc@1 (top)") == "best/val/acc_1 _top_"  # what MLflow refuses
    assert len(mlflow_key("k" * 300)) == 250
    assert clip("abc", 3) == "abc" and clip(12345, 4) == "1..."  # says that it was cut
    assert [list(batch) for batch in chunks(range(5), 2)] == [[0, 1], [2, 3], [4]]


# ---- runs tracked by the server -------------------------------------------------------------


@pytest.mark.slow
def test_a_run_logs_what_tensorboard_gets_and_its_params_tags_and_files(
    server, run_in_process, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    result = run_in_process(*TWO_EPOCHS)
    client = MlflowClient(server)
    run = only_run(client, "rmb")  # the default experiment: the task's name
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_dir.name
    assert_same_scalars(client, run.info.run_id, result.run_dir)
    tags = run.data.tags
    assert (tags["task"], tags["model"], tags["status"]) == ("rmb", "lenet", "completed")
    assert tags["overrides"].split() == [*TWO_EPOCHS, "trainer.progress=false"]  # hydra.* not
    assert tags["run_dir"] == str(result.run_dir.resolve())
    # Params: the flattened config and the group choices, as the checkpoint stores them.
    saved = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    config = saved["meta"]["choices"] | flatten(saved["config"])
    assert run.data.params == {k: clip(v, PARAM_VALUE_LENGTH) for k, v in config.items()}
    assert run.data.params["trainer.max_epochs"] == "2" and run.data.params["model"] == "lenet"
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.csv", "curves.png", "confusion_matrix.png", "final_metrics.json"} <= files
    assert [a.path for a in client.list_artifacts(run.info.run_id, "hydra")] == [
        "hydra/config.yaml",
        "hydra/overrides.yaml",
    ]


@pytest.mark.slow
def test_a_failing_run_ends_failed_with_its_error(server, run_in_process, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    # StepLR takes step_size=0, and divides by it when the first epoch ends.
    args = [*FAST, "scheduler=step", "scheduler.step_size=0", "logger.experiment_name=failed"]
    result = run_in_process(*args, check=False)
    assert result.returncode == 2
    run = only_run(MlflowClient(server), "failed")
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert "the first epoch failed with ZeroDivisionError" in run.data.tags["error"]


@pytest.mark.slow
def test_a_killed_run_resumed_continues_its_mlflow_run_with_no_step_twice(
    server, run_in_process, background_cli, tmp_path, monkeypatch
):
    """SIGKILL mid-training, then resume=auto: one MLflow run, FINISHED, every step once."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    job = [
        *("task=rmb", "data.synthetic=true", "trainer.log_every_n_steps=1"),
        *("data.batch_size=4", "trainer.max_epochs=1"),  # 16 optimizer steps
        "trainer.deterministic=true",  # the killed run and its continuation compute alike
        "callbacks=[checkpoint,tensorboard]",  # and logger=mlflow after them
        "callbacks.checkpoint.every_n_steps=1",
        *("logger=mlflow", "logger.experiment_name=killed"),
        *(f"output_root={tmp_path}", "resume=auto"),
    ]
    first = tmp_path / "first"
    process = background_cli.start(tmp_path, *job, f"hydra.run.dir={first}")
    background_cli.signal_at_step(process, first / "checkpoints" / "last.pt", 3, signal.SIGKILL)
    process.wait(timeout=60)
    client = MlflowClient(server)
    killed = only_run(client, "killed")
    assert killed.info.status == "RUNNING"  # a SIGKILL leaves no time to say otherwise
    # The window between a flush and its checkpoint landing: the server has steps that the
    # checkpoint does not (the kill may have left some; one more made sure of here), which
    # training does again after the resume.
    sent = [m.step for m in history(client, killed.info.run_id, "train/loss_step")]
    beyond = max([*sent, background_cli.saved_step(first / "checkpoints" / "last.pt")]) + 1
    client.log_metric(killed.info.run_id, "train/loss_step", 123.0, step=beyond)

    # TensorBoard reads a run's event files in name order, and a name holds its creation's
    # second, then the pid: the continuation's file must not sort before the killed run's.
    (killed_events,) = (first / "tb").glob("events.out.tfevents.*")
    time.sleep(max(0.0, int(killed_events.name.split(".")[3]) + 1 - time.time()))
    run_in_process(*job, f"hydra.run.dir={first}")  # continues `first`, in its directory

    run = only_run(client, "killed")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["status"] == "completed"
    every_step = list(range(1, 17))  # what an unbroken run logs
    expected = {"train/loss_step": every_step, "lr/group0": every_step, "val/loss": [16]}
    for key in run.data.metrics:
        steps = [m.step for m in history(client, run.info.run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged a step twice: {steps}"
        assert steps == expected.get(key, [16]), key  # epoch metrics and test/: at the end
    losses = {m.step: m.value for m in history(client, run.info.run_id, "train/loss_step")}
    assert losses[beyond] == 123.0  # kept, and training's repeat of that step not sent
    # Every other point is what TensorBoard shows (it drops what a resume redoes) for the run.
    tensorboard = tensorboard_scalars(first)
    assert set(run.data.metrics) == set(tensorboard)
    for key, points in tensorboard.items():
        logged = [
            (m.step, float(np.float32(m.value))) for m in history(client, run.info.run_id, key)
        ]
        assert [p for p in logged if p[0] != beyond] == [p for p in points if p[0] != beyond], key


@pytest.mark.slow
def test_sweep_jobs_are_runs_of_one_experiment_tagged_with_their_overrides(
    server, run_in_process, tmp_path, monkeypatch
):
    # The config key wins over the environment variable (which names no server).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    sweep_dir = tmp_path / "sweep"
    run_in_process(
        "-m",
        "seed=1,2",
        *FAST,
        f"logger.tracking_uri={server}",
        "logger.experiment_name=sweep",
        f"hydra.sweep.dir={sweep_dir}",
    )
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("sweep").experiment_id
    runs = sorted(client.search_runs([experiment]), key=lambda r: r.data.tags["sweep_job"])
    assert [r.data.tags["sweep_job"] for r in runs] == ["0", "1"]
    for job, run in enumerate(runs):
        assert f"seed={job + 1}" in run.data.tags["overrides"].split()
        assert run.data.tags["sweep_dir"] == str(sweep_dir.resolve())
        assert run.info.run_name == f"sweep/{job}"
        assert run.info.status == "FINISHED" and run.data.params["seed"] == str(job + 1)
