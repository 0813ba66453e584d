"""The SQL schema, as numbered migrations that run on SQLite and PostgreSQL alike.

Each migration is a list of statements written once with three dialect tokens:
``{id}`` an auto-incrementing integer primary key, ``{blob}`` a byte string, ``{big}`` a 64-bit
integer. A migration runs in one transaction and bumps ``schema_version``; a store opened by an
older mltrail migrates forward, one opened by a newer mltrail than this refuses to write.

Metric storage is built for tens of millions of points per run. A metric's history is a
sequence of *chunks*: each row of ``metric_chunks`` carries many points as three packed little-
endian arrays (int64 steps, int64 millisecond timestamps, float64 values), ordered by
``chunk_id``. Reading a history is one indexed range scan and a ``numpy.frombuffer`` per column;
NaN and ±inf survive bit for bit. ``latest_metrics`` keeps per (run, key) the latest value
(highest step, then latest timestamp), the minimum, maximum and point count, so searches and
listings never touch the chunks. A NaN latest/min/max is stored as NULL (SQLite cannot hold NaN,
and PostgreSQL orders NaN above every number), and read back as NaN.
"""

from __future__ import annotations

SCHEMA_VERSION_TABLE = "schema_version"

# A statement is a string for every dialect, or (dialect, string) for one dialect only.
MIGRATIONS: list[list[str | tuple[str, str]]] = [
    # 1: the whole first schema
    [
        """CREATE TABLE experiments (
            experiment_id {id},
            name TEXT NOT NULL UNIQUE,
            artifact_location TEXT NOT NULL,
            lifecycle_stage TEXT NOT NULL DEFAULT 'active',
            creation_time {big} NOT NULL,
            last_update_time {big} NOT NULL
        )""",
        """CREATE TABLE experiment_tags (
            experiment_id {big} NOT NULL REFERENCES experiments(experiment_id),
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (experiment_id, key)
        )""",
        """CREATE TABLE runs (
            run_uuid TEXT PRIMARY KEY,
            experiment_id {big} NOT NULL REFERENCES experiments(experiment_id),
            run_name TEXT NOT NULL,
            user_id TEXT NOT NULL,
            status TEXT NOT NULL,
            start_time {big} NOT NULL,
            end_time {big},
            heartbeat_deadline {big},
            lifecycle_stage TEXT NOT NULL DEFAULT 'active',
            artifact_uri TEXT NOT NULL,
            parent_run_id TEXT,
            resume_key TEXT,
            dropped_points {big} NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX runs_experiment ON runs (experiment_id, start_time)",
        "CREATE INDEX runs_resume_key ON runs (experiment_id, resume_key)",
        """CREATE TABLE params (
            run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (run_uuid, key)
        )""",
        """CREATE TABLE tags (
            run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (run_uuid, key)
        )""",
        """CREATE TABLE metric_chunks (
            chunk_id {id},
            run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
            key TEXT NOT NULL,
            n {big} NOT NULL,
            steps {blob} NOT NULL,
            timestamps {blob} NOT NULL,
            vals {blob} NOT NULL
        )""",
        "CREATE INDEX metric_chunks_series ON metric_chunks (run_uuid, key, chunk_id)",
        # PostgreSQL would pglz-compress the packed columns; decompressing costs more than
        # reading them (a 1,000,000-point history: ~120 ms compressed, far less stored plain).
        ("postgresql", "ALTER TABLE metric_chunks ALTER COLUMN steps SET STORAGE EXTERNAL"),
        ("postgresql", "ALTER TABLE metric_chunks ALTER COLUMN timestamps SET STORAGE EXTERNAL"),
        ("postgresql", "ALTER TABLE metric_chunks ALTER COLUMN vals SET STORAGE EXTERNAL"),
        """CREATE TABLE latest_metrics (
            run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value DOUBLE PRECISION,
            step {big} NOT NULL,
            timestamp {big} NOT NULL,
            min_value DOUBLE PRECISION,
            max_value DOUBLE PRECISION,
            count {big} NOT NULL,
            PRIMARY KEY (run_uuid, key)
        )""",
        """CREATE TABLE datasets (
            dataset_uuid TEXT PRIMARY KEY,
            experiment_id {big} NOT NULL REFERENCES experiments(experiment_id),
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            source_type TEXT NOT NULL,
            source TEXT NOT NULL,
            dataset_schema TEXT,
            profile TEXT,
            UNIQUE (experiment_id, name, digest)
        )""",
        """CREATE TABLE inputs (
            run_uuid TEXT NOT NULL REFERENCES runs(run_uuid) ON DELETE CASCADE,
            dataset_uuid TEXT NOT NULL REFERENCES datasets(dataset_uuid),
            context TEXT,
            PRIMARY KEY (run_uuid, dataset_uuid)
        )""",
    ],
    # 2: indexes on (key, value) so that a search ordered by a metric (its last, min or max
    # value), a param or a tag walks that key's values in order and stops after one page
    # instead of sorting every matching run. PostgreSQL orders text by code point only under
    # the "C" collation, which its indexes must then use too.
    [
        "CREATE INDEX latest_metrics_key_value ON latest_metrics (key, value)",
        "CREATE INDEX latest_metrics_key_min ON latest_metrics (key, min_value)",
        "CREATE INDEX latest_metrics_key_max ON latest_metrics (key, max_value)",
        ("sqlite", "CREATE INDEX params_key_value ON params (key, value)"),
        ("postgresql", 'CREATE INDEX params_key_value ON params (key, value COLLATE "C")'),
        ("sqlite", "CREATE INDEX tags_key_value ON tags (key, value)"),
        ("postgresql", 'CREATE INDEX tags_key_value ON tags (key, value COLLATE "C")'),
    ],
    # 3: the token of every batch the writer committed recently (PostgreSQL only: there a lost
    # connection can leave a COMMIT's outcome unknown), so that retrying a batch that had in
    # fact landed writes nothing (see SqlStore._first_write_of). SQLite gets the table too,
    # unused, to keep one schema.
    [
        """CREATE TABLE write_tokens (
            token TEXT PRIMARY KEY,
            written_at {big} NOT NULL
        )""",
        "CREATE INDEX write_tokens_written_at ON write_tokens (written_at)",
    ],
]

DIALECT_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "big": "INTEGER"},
    "postgresql": {
        "id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "blob": "BYTEA",
        "big": "BIGINT",
    },
}


def render(statement: str | tuple[str, str], dialect: str) -> str | None:
    """Return ``statement`` with the dialect tokens filled in, or None if it is for another dialect."""
    if isinstance(statement, tuple):
        only, statement = statement
        if only != dialect:
            return None
    return statement.format(**DIALECT_TYPES[dialect])
