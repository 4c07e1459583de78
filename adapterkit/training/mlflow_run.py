"""`training.trackers: [mlflow]`: one MLflow run per training run, written through an explicit MlflowClient.

Accelerate's own MLflowTracker works on mlflow's process-wide state (the tracking URI, which mlflow also exports to
the environment, and the active run). One process trains many runs here (--seeds, --cv, a search's trials), and a
trial stopped by its pruner never reaches `end_training`: with the global active run the next trial would fail to
start. A client per run, holding its own store and run id, has neither problem.

The store: MLFLOW_TRACKING_URI when set, else SQLite (MLflow 3's default backend; its file store is in maintenance
mode) at `trackers/mlflow.db` in the series' folder (--seeds/--cv, tune) or in the run folder. Experiment: the series'
folder name (or the run's), unless MLFLOW_EXPERIMENT_NAME names one. Run name: the run folder below the series.
Tags say which run it is: `seed`, `fold`/`cv_folds`, `trial`/`study`, and the absolute `adapterkit.run_dir` (runs
of different folders in one store stay apart).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate.tracking import GeneralTracker, on_main_process

from ..errors import RecipeError

if TYPE_CHECKING:
    from mlflow import MlflowClient

STORE = "mlflow.db"
ARTIFACTS = "mlflow-artifacts"

_open: list[MlflowRun] = []  # runs started in this process and not ended yet (see end_open)


class MlflowRun(GeneralTracker):
    """Accelerate's tracker interface (start, store_init_configuration, log, finish) over one MLflow run."""

    name = "mlflow"
    requires_logging_directory = False

    def __init__(self, run_dir: Path, tags: dict[str, str], root: Path | None = None, names_from: Path | None = None):
        super().__init__()
        self.run_dir = Path(run_dir).resolve()
        root = Path(root).resolve() if root else self.run_dir
        user_uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.store = None if user_uri else root / "trackers"
        self.uri = user_uri or f"sqlite:///{(root / 'trackers' / STORE).as_posix()}"
        # Our own store keeps any artifacts beside it (mlflow's default is ./mlruns in the working directory).
        self.artifacts = None if user_uri else (root / "trackers" / ARTIFACTS).as_uri()
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or root.name
        base = Path(names_from).resolve() if names_from else root
        below = self.run_dir.relative_to(base).as_posix() if self.run_dir.is_relative_to(base) else "."
        self.run_name = self.run_dir.name if below == "." else below
        self.tags = {"adapterkit.run_dir": str(self.run_dir), **tags}
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.completed = False  # set once the final metrics are logged: the run ends FINISHED, else KILLED

    @property
    def tracker(self):
        return self.client

    @on_main_process
    def start(self):
        experiment_id = self.open_experiment()
        run = self._client().create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        _open.append(self)

    def open_experiment(self) -> str:
        """Connect to the store (creating our own SQLite one) and return the experiment's id, creating it if new."""
        # MLflow 3 sends usage telemetry by default; a training run reaches no server the user did not name.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.exceptions import MlflowException

        for name in ("mlflow", "alembic"):  # store set-up and migration notes: the run's log, never the terminal
            logging.getLogger(name).setLevel(logging.WARNING)
        if self.store is not None:
            self.store.mkdir(parents=True, exist_ok=True)
        try:
            experiment_id = self._experiment_id()
        except MlflowException as e:  # a store MLflow cannot open (MLFLOW_TRACKING_URI): one line, before training
            where = self.uri if self.store else f"{self.uri} (MLFLOW_TRACKING_URI)"
            raise RecipeError(f"training.trackers: MLflow store {where}: {str(e).strip().splitlines()[0]}") from None
        exp = self._client().get_experiment(experiment_id)
        if exp.lifecycle_stage != "active":
            raise RecipeError(
                f"training.trackers: MLflow experiment {self.experiment!r} is deleted in {self.uri}; restore it "
                f"(mlflow experiments restore) or name another with MLFLOW_EXPERIMENT_NAME"
            )
        return experiment_id

    def _experiment_id(self) -> str:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.client = client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(self.experiment, artifact_location=self.artifacts)
        except MlflowException:  # created meanwhile by another process on the store (tune --jobs, a second run)
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    @on_main_process
    def store_init_configuration(self, values: dict):
        """The recipe as parameters: values clipped to MLflow's length limit, in batches of its count limit."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        clipped = {_key(k): _clip(str(v), MAX_PARAM_VAL_LENGTH) for k, v in values.items()}  # one value per key
        params = [Param(k, v) for k, v in clipped.items()]
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self._client().log_batch(self._id(), params=params[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs):
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        metrics = [
            Metric(_key(k), float(v), now, step or 0)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self._client().log_batch(self._id(), metrics=metrics[i : i + MAX_METRICS_PER_BATCH])

    @on_main_process
    def finish(self):
        self.end("FINISHED" if self.completed else "KILLED")

    def end(self, status: str) -> None:
        if self not in _open:
            return
        _open.remove(self)
        self._client().set_terminated(self._id(), status)

    def _client(self):
        assert self.client is not None, "MLflow run used before start()"
        return self.client

    def _id(self) -> str:
        assert self.run_id is not None, "MLflow run used before start()"
        return self.run_id


def end_open(status: str) -> None:
    """End the runs a failed or interrupted training left open, so none stays RUNNING in the store."""
    for run in list(_open):
        try:
            run.end(status)
        except Exception:  # noqa: BLE001 - the training's own error is the one to report
            pass


def _key(name: str) -> str:
    # MLflow takes letters, digits, _ - . / : and space in names (a label name may hold anything else).
    return re.sub(r"[^\w./: -]", "_", str(name))[:250]


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."
