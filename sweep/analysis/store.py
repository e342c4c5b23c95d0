"""The analysis store: every trial and every epoch report of a sweep, in the experiment's SQL database.

Three tables sit beside the Optuna study in the same database (a SQLite file by default, or a
PostgreSQL URL), prefixed `analysis_` because Optuna already owns a table called `trials`:

| table | key | one row per |
| --- | --- | --- |
| `analysis_experiments` | `id` (unique `name`) | experiment |
| `analysis_trials` | (`experiment_id`, `trial_id`) | Ray Tune trial: params, resolved config, status, node, timings, failure reason, and a summary |
| `analysis_reports` | (`experiment_id`, `trial_id`, `epoch`) | epoch report |

Every report also updates the summary columns of its trial: the best epoch by validation gain with
the test accuracy of that epoch, and the last value of every metric. Ranking 10,000 trials thus
reads 10,000 rows rather than every report.

Writes are upserts on the primary key, so a retried or resumed trial that reports an epoch again
leaves one row with the latest values. SQLite runs in WAL mode with a busy timeout: readers such
as `mtsweep best` read a snapshot while the sweep writes, and neither blocks the other.

Only one process, the sweep driver, is expected to write an experiment's rows. The summary is read,
changed and written back inside one transaction, which SQLite serializes with `BEGIN IMMEDIATE`.
NOTE: PostgreSQL runs that transaction at READ COMMITTED, so two processes writing reports of the
same trial at once could leave a stale summary. The upsert path for PostgreSQL is tested only by
compiling its SQL, because no PostgreSQL server was available.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from typing import Any, Mapping, Optional

import sqlalchemy as sa

logger = logging.getLogger(__name__)

# Seconds a SQLite connection waits for a lock held by another writer before it fails.
SQLITE_BUSY_TIMEOUT_S = 30.0

# Metrics of an epoch report stored as columns; other numeric metrics go to `extra_json`.
REPORT_METRICS = (
    "val_acc", "val_loss", "val_gain", "test_acc", "test_gain", "best_val_acc", "best_test_acc",
    "train_loss", "meta_loss", "gsnr", "gsnr_pooled", "gsnr_per_sample", "noise_scale", "w_mean",
    "p_max", "b_eff", "floor_hits", "weight_auc", "samples_per_sec", "wall_time",
)
# Result keys that describe the trial or Ray Tune's bookkeeping rather than a measurement.
NON_METRIC_KEYS = frozenset({
    "epoch", "epochs", "best_epoch", "steps", "status", "diverged", "divergence_step", "error",
    "trial_started_at", "reported_at", "pid", "config", "trial_id", "date", "timestamp",
    "time_this_iter_s", "time_total_s", "training_iteration", "time_since_restore",
    "iterations_since_restore", "hostname", "node_ip", "done", "should_checkpoint", "checkpoint_dir_name",
})
STATUSES = ("pending", "running", "finished", "pruned", "diverged", "errored", "terminated", "interrupted")

metadata = sa.MetaData()

experiments_table = sa.Table(
    "analysis_experiments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),  # also the Optuna study name
    sa.Column("path", sa.Text),  # experiment folder as the driver saw it
    sa.Column("metric", sa.String(64)),  # the sweep's objective
    sa.Column("mode", sa.String(8)),  # max | min
    sa.Column("searched_params_json", sa.Text),  # JSON list of dotted keys the space searches
    sa.Column("created_at", sa.Float),  # Unix time
)

trials_table = sa.Table(
    "analysis_trials",
    metadata,
    sa.Column("experiment_id", sa.Integer, sa.ForeignKey("analysis_experiments.id"), primary_key=True),
    sa.Column("trial_id", sa.String(64), primary_key=True),  # the Ray Tune trial id
    sa.Column("status", sa.String(16), nullable=False),  # one of STATUSES
    sa.Column("params_json", sa.Text),  # the trial's config as Tune drew it, dotted keys
    sa.Column("config_json", sa.Text),  # the resolved run config (base config with the params applied)
    sa.Column("node", sa.String(255)),  # IP of the node that ran the latest attempt
    sa.Column("started_at", sa.Float),  # Unix time of the first start
    sa.Column("ended_at", sa.Float),
    sa.Column("updated_at", sa.Float),
    sa.Column("num_failures", sa.Integer, nullable=False, default=0),  # attempts that raised
    sa.Column("failure_reason", sa.Text),  # last error line, or why the trial diverged
    sa.Column("epochs", sa.Integer),  # epochs the trial was configured to train
    sa.Column("num_reports", sa.Integer, nullable=False, default=0),
    sa.Column("last_epoch", sa.Integer),
    # The epoch with the best validation gain (best validation accuracy when no gain is reported).
    sa.Column("best_epoch", sa.Integer),
    sa.Column("best_val_gain", sa.Float),
    sa.Column("best_val_acc", sa.Float),
    sa.Column("best_test_acc", sa.Float),  # test accuracy at best_epoch: reported, never ranked on
    sa.Column("best_test_gain", sa.Float),
    # Values of the last epoch, and the last finite GSNR (measured on a cadence, NaN in between).
    sa.Column("last_val_gain", sa.Float),
    sa.Column("last_val_acc", sa.Float),
    sa.Column("last_test_acc", sa.Float),
    sa.Column("last_test_gain", sa.Float),
    sa.Column("last_gsnr", sa.Float),
    sa.Column("last_gsnr_epoch", sa.Integer),
    sa.Column("last_noise_scale", sa.Float),
    sa.Column("last_metrics_json", sa.Text),  # every finite metric of the last epoch
    sa.Index("ix_analysis_trials_status", "experiment_id", "status"),
)

_metric_columns = [sa.Column(name, sa.Float) for name in REPORT_METRICS]
reports_table = sa.Table(
    "analysis_reports",
    metadata,
    sa.Column("experiment_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("reported_at", sa.Float),  # Unix time the driver received the report
    *_metric_columns,
    sa.Column("extra_json", sa.Text),  # other finite numeric metrics
    sa.ForeignKeyConstraint(["experiment_id", "trial_id"], ["analysis_trials.experiment_id", "analysis_trials.trial_id"]),
)


@dataclasses.dataclass(frozen=True)
class ExperimentRecord:
    id: int
    name: str
    path: Optional[str]
    metric: Optional[str]
    mode: Optional[str]
    searched_params: tuple[str, ...]


def finite(value: Any) -> Optional[float]:
    """Return `value` as a float, or None when it is missing, not a number, NaN or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def split_metrics(result: Mapping[str, Any]) -> tuple[dict[str, Optional[float]], dict[str, float]]:
    """Split a Tune result into the report columns and the other finite numeric metrics."""
    columns = {name: finite(result.get(name)) for name in REPORT_METRICS}
    extra = {}
    for key, value in result.items():
        if key in REPORT_METRICS or key in NON_METRIC_KEYS or isinstance(value, (bool, str)):
            continue
        number = finite(value)
        if number is not None:
            extra[key] = number
    return columns, extra


def plain_json(value: Any) -> str:
    """Return canonical JSON of a config; numpy values become Python numbers and lists."""
    return json.dumps(_plain(value), sort_keys=True)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())  # numpy scalars and arrays
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# Engine ----------------------------------------------------------------------------------------


def create_engine(url: str) -> sa.Engine:
    """Return an engine for `url`; SQLite gets WAL mode, a busy timeout and explicit transactions."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, record: Any) -> None:
        # pysqlite would otherwise open transactions itself, only before a write, so a
        # read-modify-write would read outside its transaction; SQLAlchemy then emits BEGIN below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets readers see a snapshot while one writer appends. The mode is stored in the file,
        # so the Optuna study's own connections use it too.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        # NORMAL skips an fsync per commit in WAL mode. A power cut can lose the last reports (a
        # resumed trial writes them again) but cannot corrupt the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        # A writer takes the write lock up front, so it waits (busy timeout) instead of failing
        # when another connection wrote after its first read.
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def upsert(connection: sa.Connection, table: sa.Table, row: dict[str, Any], update: list[str]) -> None:
    """Insert `row`, or update the columns `update` of the row with the same primary key."""
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        connection.execute(_upsert_statement(dialect, table, tuple(row), tuple(update)), row)
        return
    # Other databases: look up, then update or insert, inside the caller's transaction.
    keys = [column.name for column in table.primary_key.columns]
    where = sa.and_(*(table.c[key] == row[key] for key in keys))
    if connection.execute(sa.select(table.c[keys[0]]).where(where)).first() is None:
        connection.execute(sa.insert(table).values(**row))
    elif update:
        connection.execute(sa.update(table).where(where).values(**{name: row[name] for name in update}))


@functools.lru_cache(maxsize=64)
def _upsert_statement(dialect: str, table: sa.Table, columns: tuple[str, ...], update: tuple[str, ...]) -> Any:
    """Return the INSERT ... ON CONFLICT statement, built once: building it took most of a write."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    keys = [column.name for column in table.primary_key.columns]
    statement = insert(table).values({name: sa.bindparam(name) for name in columns})
    if not update:
        return statement.on_conflict_do_nothing(index_elements=keys)
    return statement.on_conflict_do_update(index_elements=keys, set_={name: statement.excluded[name] for name in update})


# The store -------------------------------------------------------------------------------------


class AnalysisStore:
    """Read and write the analysis tables of one database.

    `create=False` opens the store for reading only: nothing is created, and a database without
    the tables reads as empty.
    """

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = url
        self.engine = create_engine(url)
        if create:
            metadata.create_all(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    def has_tables(self) -> bool:
        return sa.inspect(self.engine).has_table(experiments_table.name)

    def _write(self) -> Any:
        """Return a transaction context for a write (`BEGIN IMMEDIATE` on SQLite)."""
        connection = self.engine.connect().execution_options(sqlite_immediate=True)
        return _Transaction(connection)

    # Experiments -------------------------------------------------------------------------------

    def ensure_experiment(self, name: str, path: str | None = None, metric: str | None = None, mode: str | None = None, searched_params: list[str] | tuple[str, ...] = ()) -> int:
        """Return the id of the experiment `name`, creating or updating its row."""
        row = {
            "name": name,
            "path": path,
            "metric": metric,
            "mode": mode,
            "searched_params_json": json.dumps(list(searched_params)),
            "created_at": time.time(),
        }
        with self._write() as connection:
            existing = connection.execute(sa.select(experiments_table.c.id).where(experiments_table.c.name == name)).scalar()
            if existing is None:
                return int(connection.execute(sa.insert(experiments_table).values(**row)).inserted_primary_key[0])
            # A caller that knows less (a reader, a test) must not erase what the driver stored.
            changes = {key: row[key] for key in ("path", "metric", "mode", "searched_params_json") if row[key] not in (None, "[]")}
            if changes:
                connection.execute(sa.update(experiments_table).where(experiments_table.c.id == existing).values(**changes))
            return int(existing)

    def experiment(self, name: str) -> Optional[ExperimentRecord]:
        """Return the experiment called `name`, or None when the store has none (or no tables)."""
        if not self.has_tables():
            return None
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(experiments_table).where(experiments_table.c.name == name)).first()
        if row is None:
            return None
        return ExperimentRecord(
            id=row.id, name=row.name, path=row.path, metric=row.metric, mode=row.mode,
            searched_params=tuple(json.loads(row.searched_params_json or "[]")),
        )

    # Trials ------------------------------------------------------------------------------------

    def start_trial(
        self,
        experiment_id: int,
        trial_id: str,
        params: Mapping[str, Any],
        config: Mapping[str, Any] | None = None,
        node: str | None = None,
        started_at: float | None = None,
        status: str = "running",
    ) -> None:
        """Record that a trial started (or restarted); its first start time is kept."""
        now = time.time()
        row = {
            "experiment_id": experiment_id,
            "trial_id": trial_id,
            "status": status,
            "params_json": plain_json(params),
            "config_json": plain_json(config) if config is not None else None,
            "node": node,
            "started_at": started_at or now,
            "updated_at": now,
            "num_failures": 0,
            "num_reports": 0,
        }
        update = ["status", "params_json", "updated_at"] + [key for key in ("config_json", "node") if row[key] is not None]
        with self._write() as connection:
            upsert(connection, trials_table, row, update)

    def end_trial(
        self,
        experiment_id: int,
        trial_id: str,
        status: str,
        failure_reason: str | None = None,
        num_failures: int | None = None,
        ended_at: float | None = None,
    ) -> None:
        """Record a trial's final status (finished, pruned, diverged, errored or terminated)."""
        if status not in STATUSES:
            raise ValueError(f"status={status!r} is not a trial status; expected one of {', '.join(STATUSES)}")
        now = time.time()
        changes: dict[str, Any] = {"status": status, "updated_at": now}
        if status != "running":
            changes["ended_at"] = ended_at or now
        if failure_reason is not None:
            changes["failure_reason"] = failure_reason
        if num_failures is not None:
            changes["num_failures"] = num_failures
        with self._write() as connection:
            self._ensure_trial(connection, experiment_id, trial_id)
            connection.execute(sa.update(trials_table).where(_trial_where(experiment_id, trial_id)).values(**changes))

    def _ensure_trial(self, connection: sa.Connection, experiment_id: int, trial_id: str) -> None:
        """Insert a placeholder trial row when a report or an end arrives for an unknown trial."""
        now = time.time()
        row = {
            "experiment_id": experiment_id, "trial_id": trial_id, "status": "running", "params_json": "{}",
            "started_at": now, "updated_at": now, "num_failures": 0, "num_reports": 0,
        }
        upsert(connection, trials_table, row, update=[])

    # Reports -----------------------------------------------------------------------------------

    def write_report(self, experiment_id: int, trial_id: str, epoch: int, result: Mapping[str, Any]) -> bool:
        """Upsert one epoch report and update the trial's summary; return True for a new epoch.

        Writing the same epoch again (a retried or resumed trial) replaces its values and leaves one
        row. When the values changed, the trial's summary is recomputed from all its reports.
        """
        columns, extra = split_metrics(result)
        row = {
            "experiment_id": experiment_id, "trial_id": trial_id, "epoch": int(epoch), "reported_at": time.time(),
            **columns, "extra_json": json.dumps(extra, sort_keys=True),
        }
        with self._write() as connection:
            self._ensure_trial(connection, experiment_id, trial_id)
            where = sa.and_(_trial_where(experiment_id, trial_id, reports_table), reports_table.c.epoch == int(epoch))
            previous = connection.execute(sa.select(reports_table).where(where)).first()
            upsert(connection, reports_table, row, update=[name for name in row if name not in ("experiment_id", "trial_id", "epoch")])
            if previous is None:
                summary = self._updated_summary(connection, experiment_id, trial_id, row, result)
            elif _same_metrics(previous._mapping, row):
                summary = {}
            else:
                summary = self._recomputed_summary(connection, experiment_id, trial_id)
            summary.update(_trial_fields(result))
            summary["updated_at"] = time.time()
            connection.execute(sa.update(trials_table).where(_trial_where(experiment_id, trial_id)).values(**summary))
        return previous is None

    def _updated_summary(self, connection: sa.Connection, experiment_id: int, trial_id: str, row: dict[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
        """Return the summary columns that change when `row`, a new epoch, joins the trial."""
        current = connection.execute(sa.select(trials_table).where(_trial_where(experiment_id, trial_id))).one()._mapping
        summary: dict[str, Any] = {"num_reports": (current["num_reports"] or 0) + 1}
        if _is_better_epoch(row, current):
            summary.update(_best_fields(row))
        if current["last_epoch"] is None or row["epoch"] >= current["last_epoch"]:
            summary.update(_last_fields(row, result))
        if row["gsnr"] is not None and (current["last_gsnr_epoch"] is None or row["epoch"] >= current["last_gsnr_epoch"]):
            summary.update(last_gsnr=row["gsnr"], last_gsnr_epoch=row["epoch"])
        return summary

    def _recomputed_summary(self, connection: sa.Connection, experiment_id: int, trial_id: str) -> dict[str, Any]:
        """Return every summary column, computed from all of the trial's stored reports."""
        rows = connection.execute(
            sa.select(reports_table).where(_trial_where(experiment_id, trial_id, reports_table)).order_by(reports_table.c.epoch)
        ).all()
        summary: dict[str, Any] = {"num_reports": len(rows), "last_gsnr": None, "last_gsnr_epoch": None}
        best: dict[str, Any] = {name: None for name in ("best_epoch", "best_val_gain", "best_val_acc", "best_test_acc", "best_test_gain")}
        for report in rows:
            report_row = dict(report._mapping)
            if _is_better_epoch(report_row, best):
                best = _best_fields(report_row)
            if report_row["gsnr"] is not None:
                summary.update(last_gsnr=report_row["gsnr"], last_gsnr_epoch=report_row["epoch"])
        summary.update(best)
        if rows:
            last = dict(rows[-1]._mapping)
            measured = {name: last[name] for name in REPORT_METRICS}
            summary.update(_last_fields(last, {**json.loads(last["extra_json"] or "{}"), **measured}))
        return summary

    # Reading -----------------------------------------------------------------------------------

    def trials(self, experiment_id: int, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Return the trial rows of an experiment (summary included) as dicts, params decoded."""
        query = sa.select(trials_table).where(trials_table.c.experiment_id == experiment_id)
        if statuses:
            query = query.where(trials_table.c.status.in_(statuses))
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(trials_table.c.started_at, trials_table.c.trial_id)).all()
        return [_decoded_trial(row._mapping) for row in rows]

    def trial_summaries(self, experiment_id: int, with_last_metrics: bool = False) -> list[dict[str, Any]]:
        """Return the trial rows without the resolved config, as `trials` does, for ranking.

        Leaving out the config (a few kB of JSON per trial) and, unless asked for, the last metrics
        halves the time to read 10,000 trials.
        """
        skipped = {"config_json"} | (set() if with_last_metrics else {"last_metrics_json"})
        query = sa.select(*(column for column in trials_table.columns if column.name not in skipped))
        query = query.where(trials_table.c.experiment_id == experiment_id).order_by(trials_table.c.started_at, trials_table.c.trial_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_decoded_trial(row._asdict()) for row in rows]

    def reports(self, experiment_id: int, trial_id: str | None = None) -> list[dict[str, Any]]:
        """Return the reports of an experiment (or of one trial), ordered by trial and epoch."""
        query = sa.select(reports_table).where(reports_table.c.experiment_id == experiment_id)
        if trial_id is not None:
            query = query.where(reports_table.c.trial_id == trial_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(reports_table.c.trial_id, reports_table.c.epoch)).all()
        return [_decoded_report(row._mapping) for row in rows]


class _Transaction:
    """A connection with an open transaction: commit on success, roll back on error, then close."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sa.Connection:
        self.connection.begin()
        return self.connection

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        try:
            if kind is None:
                self.connection.commit()
            else:
                self.connection.rollback()
        finally:
            self.connection.close()


# Summary helpers -------------------------------------------------------------------------------


def _trial_where(experiment_id: int, trial_id: str, table: sa.Table = trials_table) -> Any:
    return sa.and_(table.c.experiment_id == experiment_id, table.c.trial_id == trial_id)


def _ranking_value(row: Mapping[str, Any], prefix: str = "") -> Optional[float]:
    """Return the value an epoch is ranked by: the validation gain, else the validation accuracy."""
    gain = row.get(f"{prefix}val_gain")
    return gain if gain is not None else row.get(f"{prefix}val_acc")


def _is_better_epoch(row: Mapping[str, Any], best: Mapping[str, Any]) -> bool:
    """Return whether a report beats the trial's best epoch so far; an earlier epoch wins a tie."""
    value = _ranking_value(row)
    if value is None:
        return False
    best_value = _ranking_value(best, "best_")
    return best_value is None or value > best_value


def _best_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "best_epoch": row["epoch"],
        "best_val_gain": row["val_gain"],
        "best_val_acc": row["val_acc"],
        "best_test_acc": row["test_acc"],
        "best_test_gain": row["test_gain"],
    }


def _last_fields(row: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    columns, extra = split_metrics(result)
    every = {key: value for key, value in {**extra, **columns}.items() if value is not None}
    return {
        "last_epoch": row["epoch"],
        "last_val_gain": row["val_gain"],
        "last_val_acc": row["val_acc"],
        "last_test_acc": row["test_acc"],
        "last_test_gain": row["test_gain"],
        "last_noise_scale": row["noise_scale"],
        "last_metrics_json": json.dumps(every, sort_keys=True),
    }


def _trial_fields(result: Mapping[str, Any]) -> dict[str, Any]:
    """Return the trial columns a result carries: configured epochs, node, divergence."""
    fields: dict[str, Any] = {}
    if result.get("epochs") is not None:
        fields["epochs"] = int(result["epochs"])
    if result.get("node_ip"):
        fields["node"] = str(result["node_ip"])
    if result.get("diverged"):
        fields["status"] = "diverged"
        fields["failure_reason"] = str(result.get("error") or "loss became NaN or infinite")
    return fields


def _same_metrics(previous: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    names = list(REPORT_METRICS) + ["extra_json"]
    return all(previous[name] == row[name] for name in names)


def _decoded_trial(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return a trial row with its JSON columns decoded; a column left out of the query stays out."""
    trial = dict(row)
    trial["params"] = json.loads(trial.pop("params_json") or "{}")
    if "config_json" in trial:
        trial["config"] = json.loads(trial.pop("config_json") or "null")
    if "last_metrics_json" in trial:
        trial["last_metrics"] = json.loads(trial.pop("last_metrics_json") or "{}")
    return trial


def _decoded_report(row: Mapping[str, Any]) -> dict[str, Any]:
    report = dict(row)
    report.update(json.loads(report.pop("extra_json") or "{}"))
    return report
