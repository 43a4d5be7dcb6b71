"""``logger=mlflow``: the factory of the MLflow callback (``conf/logger/mlflow.yaml`` adds it to
the callbacks as ``callbacks.mlflow``), and the checks that turn a user's mistake into one line
before training starts: mlflow not installed, no server at the tracking URI, a URI MLflow
cannot use, a server that refuses the requests.

mlflow is imported here only when the factory runs, so ``train`` without ``logger=mlflow``
neither needs nor loads it.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchcamp.trainer.app.assembly import RunContext
from torchcamp.trainer.app.callbacks import flatten
from torchcamp.trainer.app.run_dir import NOT_THE_EXPERIMENT, RunDirectory
from torchcamp.trainer.errors import UserError, first_line, first_sentence

if TYPE_CHECKING:
    from torchcamp.trainer.callbacks.mlflow_logger import MLflowLogger

log = logging.getLogger("torchcamp")

INSTALL = "pip install 'torchcamp[mlflow]'"
PROBE_SECONDS = 5.0  # how long the reachability probe waits for a tracking server to answer
URI_FORMS = (
    "give http://HOST:PORT (a tracking server), sqlite:///mlflow.db (a local database file) "
    "or databricks"
)


def mlflow_logger(
    run: RunContext,
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
    run_name: str | None = None,
    flush_secs: float = 60.0,
) -> MLflowLogger | None:
    """The MLflow callback of ``run`` (see :class:`MLflowLogger`), rank 0 only.

    The tracking URI is ``tracking_uri`` (``logger.tracking_uri``), else the environment's
    ``MLFLOW_TRACKING_URI``, else MLflow's default (``sqlite:///mlflow.db`` in the working
    directory, its artifacts in ``./mlruns``). The experiment is
    ``experiment_name`` (by default the task's name), created if new; the run is named
    ``run_name``, by default the run directory under ``output_root`` (``2025-01-31/12-00-00``,
    ``multirun/2025-01-31/12-00-00/3``). Every rank checks the server (a mistake stops them
    all); a ``fast_dev_run`` checks it and logs nothing (its files are removed too).
    """
    mlflow = import_mlflow()
    uri, source = resolve_tracking_uri(tracking_uri, mlflow.get_tracking_uri)
    check_reachable(uri, source)
    if not run.is_main:
        return None
    client = make_client(mlflow, uri, source)
    name = experiment_name or run.settings.task.name
    if run.settings.fast_dev_run:
        _call(source, client.get_experiment_by_name, name)  # does the server take requests?
        log.info("fast_dev_run: no MLflow run (the tracking server at %s answers)", uri)
        return None
    from torchcamp.trainer.callbacks.mlflow_logger import MLflowLogger  # imports mlflow

    return MLflowLogger(
        client,
        uri,
        experiment_id(client, name, source),
        run.directory.path,
        # A run's own last.pt resumed (in its directory, named or not): that run goes on.
        continued=bool(run.settings.resume)
        and RunDirectory.continued_by(Path(run.settings.resume)) is not None,
        run_name=run_name or default_run_name(run),
        params=run.settings.choices | flatten(run.settings.config),
        tags=run_tags(run),
        flush_secs=flush_secs,
        artifacts=run.directory.artifacts,
        free_params=NOT_THE_EXPERIMENT,
    )


def import_mlflow() -> Any:
    """The mlflow module; one that is not installed (or does not import) is one line saying
    how to install it."""
    try:
        import mlflow
        import mlflow.tracking  # the client
    except ImportError as error:
        if getattr(error, "name", None) == "mlflow":
            raise UserError(
                f"logger=mlflow needs the mlflow package, which is not installed: {INSTALL} "
                "(or train without logger=mlflow)"
            ) from None
        raise UserError(
            f"logger=mlflow: mlflow is installed and does not import ({first_line(error)}): "
            f"reinstall it with {INSTALL}"
        ) from None
    return mlflow


def resolve_tracking_uri(tracking_uri: str | None, default: Any) -> tuple[str, str]:
    """``(uri, where it came from)``: the config key, the environment variable, or MLflow's
    default (``default()``); the second names it in error messages as the user set it."""
    if tracking_uri:
        return tracking_uri, f"logger.tracking_uri={tracking_uri}"
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env, f"MLFLOW_TRACKING_URI={from_env}"
    uri = str(default())
    return (
        uri,
        f"MLflow's default tracking URI {uri} (no logger.tracking_uri, no MLFLOW_TRACKING_URI)",
    )


def check_reachable(uri: str, source: str) -> None:
    """For a tracking server's URI (http, https): does anything answer there? Asked once,
    without retries: MLflow's own client retries for minutes before it reports a server that is
    not there. Any HTTP answer will do (whether it is MLflow's is the first request's
    question); TLS is not checked here either (the client checks it, as MLflow is configured).
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    host, port = _host_and_port(parsed, source)
    probe = urllib.request.Request(uri.rstrip("/") + "/health", method="GET")
    try:
        with urllib.request.urlopen(probe, timeout=PROBE_SECONDS, context=_unverified()):
            pass
    except urllib.error.HTTPError:
        return  # an answer: something is there
    except OSError as error:  # URLError too: refused, unknown host, timed out
        reason = getattr(error, "reason", error)
        raise UserError(_unreachable(source, host, port, reason)) from None


def _host_and_port(parsed: urllib.parse.ParseResult, source: str) -> tuple[str, int]:
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError as error:  # not a number, or out of range
        raise UserError(f"{source} is not a URI ({first_line(error)}): {URI_FORMS}") from None
    if not parsed.hostname:
        raise UserError(f"{source} names no host: {URI_FORMS}")
    return parsed.hostname, port


def _unreachable(source: str, host: str, port: int, reason: Any) -> str:
    """The line for a server that did not answer: a host name that does not resolve is a
    typo to fix; otherwise no server runs there (yet)."""
    elsewhere = "point logger.tracking_uri or MLFLOW_TRACKING_URI at a tracking server that runs"
    if isinstance(reason, socket.gaierror):
        return f"{source}: no host {host} is known ({reason}): check its name, or {elsewhere}"
    return (
        f"{source}: no MLflow tracking server answers there ({reason}): start one "
        f"(mlflow server --host {host} --port {port}), or {elsewhere}"
    )


def _unverified() -> ssl.SSLContext:
    """TLS without checking the certificate: the probe asks only whether something answers."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def make_client(mlflow: Any, uri: str, source: str) -> Any:
    """An ``MlflowClient`` of ``uri``: no global state (a sweep's jobs may share a process)."""
    try:
        return mlflow.tracking.MlflowClient(uri)
    except mlflow.exceptions.MlflowException as error:  # a scheme it has no store for
        raise UserError(
            f"{source} is not a tracking URI MLflow can use ({first_sentence(error)}): {URI_FORMS}"
        ) from None


def experiment_id(client: Any, name: str, source: str) -> str:
    """The id of the experiment ``name``, created if new. One in MLflow's trash is a one-line
    error: runs cannot go there."""
    from mlflow.exceptions import MlflowException

    experiment = _call(source, client.get_experiment_by_name, name)
    if experiment is None:
        try:
            return client.create_experiment(name)
        except MlflowException:
            # Created meanwhile by another job of a sweep? Else the same error, as one line.
            experiment = _call(source, client.get_experiment_by_name, name)
            if experiment is None:
                return _call(source, client.create_experiment, name)
    if experiment.lifecycle_stage == "deleted":
        raise UserError(
            f"logger.experiment_name={name}: that MLflow experiment is deleted (id "
            f"{experiment.experiment_id}): restore it (mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}), or give another name"
        )
    return experiment.experiment_id


def _call(source: str, request: Any, *args: Any) -> Any:
    """``request(*args)``; MLflow's refusal (not an MLflow server, no access, a store it cannot
    open) is one line."""
    from mlflow.exceptions import MlflowException

    try:
        return request(*args)
    except MlflowException as error:
        raise UserError(
            f"{source}: the MLflow tracking store refused logger=mlflow's request "
            f"({first_sentence(error)}): check the URI ({URI_FORMS}) and the credentials "
            "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)"
        ) from None


def default_run_name(run: RunContext) -> str:
    """The run directory under ``output_root`` (``2025-01-31/12-00-00``); elsewhere its own
    name, after its sweep's for a sweep job (``12-00-00/3``)."""
    path = run.directory.path.resolve()
    try:
        return str(path.relative_to(Path(run.settings.output_root).resolve()))
    except ValueError:
        sweep = run.settings.sweep
        return f"{Path(sweep['dir']).name}/{path.name}" if sweep else path.name


def run_tags(run: RunContext) -> dict[str, str]:
    """What the run is: task, model, command-line overrides (``hydra.overrides.task``), run
    directory, and a sweep job's sweep directory and number."""
    settings = run.settings
    tags = {
        "task": settings.task.name,
        "model": settings.choices.get("model") or str(settings.model.get("_target_", "")),
        "overrides": " ".join(settings.overrides),
        "run_dir": str(run.directory.path.resolve()),
    }
    if settings.sweep:
        tags["sweep_dir"] = str(Path(settings.sweep["dir"]).resolve())
        tags["sweep_job"] = str(settings.sweep["job"])
    return tags
