"""MLflow tracking beside TensorBoard: the same scalars at the same steps, the config as params,
tags that say what the run is and how it ended, and the run's files as artifacts.

Built by :func:`torchcamp.trainer.app.tracking.mlflow_logger` (``logger=mlflow``), which has
checked that mlflow imports and that the tracking server answers. This module imports mlflow:
import it only once that is known.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from torchcamp.trainer.callbacks import Callback
from torchcamp.trainer.errors import UserError, first_line, first_sentence
from torchcamp.trainer.metrics import logged_step_scalars, read_numbers
from torchcamp.trainer.status import RunStatus
from torchcamp.trainer.trainer import epoch_metrics

log = logging.getLogger("torchcamp")

# MLflow's limits (mlflow/utils/validation.py): log_batch takes at most 1000 metrics and 100
# params or tags per call; a param's value at most 6000 characters, a tag's 8000 (5000 on older
# servers: this stays under both), a key 250. Longer values are cut here, not refused there.
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
PARAM_VALUE_LENGTH = 6000
TAG_VALUE_LENGTH = 5000
KEY_LENGTH = 250
# What a key may hold everywhere MLflow runs (colons are refused on Windows servers).
NOT_IN_KEYS = re.compile(r"[^\w./\- ]")

FINAL_METRICS = "final_metrics.json"


class MLflowLogger(Callback):
    """One MLflow run per torchcamp run, continued by ``resume``; rank 0 only.

    Metrics: what :class:`~torchcamp.trainer.callbacks.tensorboard.TensorBoardLogger` logs as
    scalars, under the same names and optimizer steps (``train/<name>_step`` and ``lr/<group>``
    every ``trainer.log_every_n_steps``; ``epoch`` and the epoch metrics after each epoch; the
    final ``test/`` and ``best/`` metrics at the end). They are buffered and sent in one request
    before each checkpoint is written (``on_save_checkpoint``), after each epoch, every
    ``flush_secs`` seconds, and at the end.

    A resumed run that goes on in its own directory (``continued``: ``resume=auto``, or the
    path of a run's ``last.pt``) continues the MLflow run its checkpoint names (this callback's
    state). A killed run may have sent steps its checkpoint does not hold, so the server is
    asked for the last step of each metric, and training's repeat of those steps is not sent
    again: no step is logged twice. A checkpoint that starts a new run directory
    (``resume=.../best.pt``) starts a new MLflow run, tagged with the old one's id.

    Params: ``params`` (the flattened config), cut to MLflow's limits. MLflow keeps a param's
    first value: a resumed run adds new ones, and one whose value changed (say
    ``trainer.max_epochs``) is kept and the new value tagged ``changed_on_resume.<key>``
    (``free_params``, the keys that make no other experiment, such as ``resume`` and
    ``trainer.max_time``, change freely). Keys with characters MLflow refuses
    have them as ``_``. Tags: ``tags`` and ``status`` (running,
    then completed, early_stopped, time_limit, interrupted or failed; the MLflow status says
    FINISHED, KILLED or FAILED). Artifacts at the end: the ``artifacts`` files that exist
    (``(path, artifact folder or None)``) and the final metrics as ``final_metrics.json``.

    An MLflow error after the start (the server went away) is a warning, and the run trains
    on without MLflow (its MLflow run stays RUNNING, and misses what follows; resume=auto
    continues it); at the start (:meth:`on_fit_start`) it is a :class:`UserError`.
    """

    # After metrics_csv and plots (10, 12): their files are written when the fit ends. Before
    # ModelCheckpoint (20): an epoch's metrics are sent before the checkpoint of that epoch.
    order = 16

    def __init__(
        self,
        client: MlflowClient,
        tracking_uri: str,
        experiment_id: str,
        run_dir: str | Path,
        continued: bool = False,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        flush_secs: float = 60.0,
        artifacts: Sequence[tuple[Path, str | None]] = (),
        free_params: Collection[str] = (),
    ) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.run_dir = Path(run_dir)
        self.continued = continued
        self.run_name = run_name
        self.params = {
            mlflow_key(k): clip(v, PARAM_VALUE_LENGTH) for k, v in (params or {}).items()
        }
        self.tags = {mlflow_key(k): clip(v, TAG_VALUE_LENGTH) for k, v in (tags or {}).items()}
        self.flush_secs = flush_secs
        self.artifacts = list(artifacts)
        self.free_params = frozenset(free_params)
        self.run_id: str | None = None
        self._resumed_id: str | None = None  # the MLflow run of the checkpoint resumed
        self._pending: list[Metric] = []
        self._sent_through: dict[str, int] = {}  # a continued run: the server's last step per key
        self._epoch_metric_names: set[str] = set()
        self._last_flush = time.monotonic()
        self._broken = False  # an MLflow error mid-run: no more requests from this process

    # ---- state: the run to continue --------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._resumed_id = state.get("run_id")

    # ---- events ----------------------------------------------------------------------------

    def on_fit_start(self, trainer: Any) -> None:
        try:
            if self._resumed_id and self.continued:
                self._continue(self._resumed_id)
            if self.run_id is None:
                self._start(resumed_from=self._resumed_id)
        except MlflowException as error:
            raise UserError(
                f"logger=mlflow: the tracking server at {self.tracking_uri} refused to "
                f"start the run ({first_sentence(error)}); check it, or train without "
                "logger=mlflow"
            ) from None
        # Metrics of epochs before a resume are not final metrics (TensorBoardLogger's rule).
        self._epoch_metric_names = {k for row in trainer.history for k in epoch_metrics(row)}
        self._last_flush = time.monotonic()

    def on_train_step_end(self, trainer: Any, outputs: Mapping[str, Any]) -> None:
        step = trainer.global_step
        if step % trainer.log_every_n_steps == 0:
            self._record(logged_step_scalars(outputs, trainer.optimization.step_lrs), step)

    def on_save_checkpoint(self, trainer: Any) -> None:
        self._flush()  # what was logged up to this step is sent before its checkpoint is written

    def on_epoch_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        self._record({"epoch": trainer.epoch, **metrics}, trainer.global_step)
        self._epoch_metric_names.update(metrics)
        self._flush()

    def on_fit_end(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        new = {n: v for n, v in metrics.items() if n not in self._epoch_metric_names}
        self._record(new, trainer.global_step)
        self._flush()
        status = trainer.stop_reason or RunStatus.COMPLETED
        self._log_artifacts(trainer, metrics, status)
        self._end(status, "FINISHED")

    def on_interrupt(self, trainer: Any) -> None:
        self._flush()
        self._end(RunStatus.INTERRUPTED, "KILLED")  # resume=auto continues it

    def on_exception(self, trainer: Any, error: BaseException) -> None:
        """Fit raised (see trainer/app/train.py): the run ends FAILED (KILLED for a second
        Ctrl-C), with the error's first line as its ``error`` tag."""
        self._flush()
        if isinstance(error, KeyboardInterrupt):
            self._end(RunStatus.INTERRUPTED, "KILLED")
        else:
            self._end(
                RunStatus.FAILED,
                "FAILED",
                {"error": f"{type(error).__name__}: {first_line(error)}"},
            )

    # ---- the run ---------------------------------------------------------------------------

    def _start(self, resumed_from: str | None) -> None:
        """A new MLflow run with the tags and params."""
        tags = self.tags | {"status": RunStatus.RUNNING.value}
        if resumed_from:  # a checkpoint of another run directory (best.pt, a copied file)
            tags["resumed_from_mlflow_run"] = resumed_from
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=self.run_name)
        self.run_id = run.info.run_id
        self._log_params(self.params)
        log.info("MLflow run %s: %s", run.info.run_name, self._location())

    def _continue(self, run_id: str) -> None:
        """Go on with the checkpoint's MLflow run: note the last step the server has of each
        metric, add the params it lacks, mark it running again (in this run directory). One
        that is gone (deleted, another tracking server) is left, with a warning, for a new
        run."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException as error:
            log.warning(
                "MLflow run %s of the checkpoint is not on %s (%s): starting a new run",
                run_id,
                self.tracking_uri,
                first_sentence(error),
            )
            return
        if run.info.lifecycle_stage == "deleted":
            log.warning("MLflow run %s of the checkpoint was deleted: starting a new run", run_id)
            return
        self.run_id = run_id
        self._sent_through = {metric.key: metric.step for metric in run.data.to_proto().metrics}
        self._log_changed_params(run.data.params)
        self.client.update_run(run_id, status="RUNNING")
        # Where the run is now (a run directory may have moved since), and that it runs.
        now = {
            "status": RunStatus.RUNNING.value,
            "run_dir": self.tags.get("run_dir", str(self.run_dir)),
        }
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in now.items()])
        log.info("MLflow run %s continued: %s", run.info.run_name, self._location())

    def _log_changed_params(self, logged: Mapping[str, str]) -> None:
        """The params the run lacks; a changed value kept, the new one in a tag."""
        self._log_params({k: v for k, v in self.params.items() if k not in logged})
        changed = {
            k: v
            for k, v in self.params.items()
            if k in logged and logged[k] != v and k not in self.free_params
        }
        if changed:
            log.warning(
                "MLflow keeps a run's first params: %s changed on resume (tagged "
                "changed_on_resume.<key>)",
                ", ".join(f"{k} {logged[k]} -> {v}" for k, v in changed.items()),
            )
            tags = [
                RunTag(mlflow_key(f"changed_on_resume.{k}"), clip(v, TAG_VALUE_LENGTH))
                for k, v in changed.items()
            ]
            for chunk in chunks(tags, PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, tags=chunk)

    def _log_params(self, params: Mapping[str, str]) -> None:
        entries = [Param(key, value) for key, value in params.items()]
        for chunk in chunks(entries, PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def _location(self) -> str:
        """Where to look at the run: its page for a tracking server, else the URI and id."""
        uri = self.tracking_uri
        if uri.startswith(("http://", "https://")):
            return f"{uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"{uri}, run id {self.run_id}"

    # ---- metrics ---------------------------------------------------------------------------

    def _record(self, scalars: Mapping[str, Any], step: int) -> None:
        """Buffer ``scalars`` at ``step``, but those the server has already (a continued run's
        steps that its killed predecessor sent after the checkpoint resumed)."""
        now = int(time.time() * 1000)
        values = read_numbers(list(scalars.values()))  # one host read for the step's tensors
        for name, value in zip(scalars, values, strict=True):
            key = mlflow_key(name)
            if step > self._sent_through.get(key, -1):
                self._pending.append(Metric(key, value, now, step))
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self._flush()

    def _flush(self) -> None:
        """Send the buffered metrics, oldest first (so the server's last step of a metric says
        that every earlier one was sent)."""
        self._last_flush = time.monotonic()
        pending, self._pending = self._pending, []
        for chunk in chunks(pending, METRICS_PER_BATCH):
            if not self._send(self.client.log_batch, self.run_id, metrics=chunk):
                return

    def _log_artifacts(self, trainer: Any, metrics: Mapping[str, float], status: str) -> None:
        """The run's files (``artifacts``) and its final metrics; one that the artifact store
        refuses is a warning, and the others are still sent."""
        for path, folder in self.artifacts:
            if path.is_file():
                self._send(self.client.log_artifact, self.run_id, str(path), folder, fatal=False)
        # metrics.json is written once fit has returned: what it holds of the run, here.
        final = dict(metrics) | {
            "epoch": trainer.epoch,
            "global_step": trainer.global_step,
            "time/fit_seconds": round(trainer.fit_seconds, 3),
            "status": status,
            "run_dir": str(self.run_dir),
        }
        self._send(self.client.log_dict, self.run_id, final, FINAL_METRICS, fatal=False)

    def _end(self, status: str, mlflow_status: str, tags: Mapping[str, str] | None = None) -> None:
        """The ``status`` tag (and ``tags``), then the run's MLflow status and end time."""
        entries = [
            RunTag(k, clip(v, TAG_VALUE_LENGTH))
            for k, v in {"status": status, **(tags or {})}.items()
        ]
        self._send(self.client.log_batch, self.run_id, tags=entries)
        self._send(self.client.set_terminated, self.run_id, mlflow_status)

    def _send(
        self, request: Callable[..., Any], *args: Any, fatal: bool = True, **kwargs: Any
    ) -> bool:
        """``request(*args, **kwargs)``, False if it failed (a warning). After a ``fatal``
        failure no more requests are made: MLflow's client retries for minutes before it gives
        up, which must not happen at every step; TensorBoard and metrics.csv still have it all."""
        if self._broken or self.run_id is None:
            return False
        try:
            request(*args, **kwargs)
        except (MlflowException, OSError) as error:
            self._broken = fatal
            log.warning(
                "MLflow: %s failed (%s)%s",
                getattr(request, "__name__", "a request"),
                first_sentence(error),
                "; the run trains on without MLflow" if fatal else "",
            )
            return False
        return True


def mlflow_key(name: str) -> str:
    """``name`` as MLflow takes it: characters it refuses in a key as ``_``, at most 250."""
    return NOT_IN_KEYS.sub("_", str(name))[:KEY_LENGTH]


def clip(value: Any, length: int) -> str:
    """``value`` as text, cut to ``length`` characters (with a ``...`` that says it was)."""
    text = str(value)
    return text if len(text) <= length else text[: length - 3] + "..."


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``size``, in order."""
    return (items[start : start + size] for start in range(0, len(items), size))
