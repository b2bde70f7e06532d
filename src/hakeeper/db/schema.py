"""The LCD's schema and its migrations.

``PRAGMA user_version`` holds the number of migrations applied. Each migration
runs in the same transaction as the version bump, so a crash leaves the schema
either before or after it. Never edit a migration that has shipped: add one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE nodes (
        name  TEXT PRIMARY KEY,
        local INTEGER NOT NULL DEFAULT 0 CHECK (local IN (0, 1))
    );
    CREATE TABLE apps (
        name TEXT PRIMARY KEY
    );
    CREATE TABLE types (
        app  TEXT NOT NULL REFERENCES apps (name),
        name TEXT NOT NULL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE resources (
        tag            TEXT PRIMARY KEY,
        id             TEXT NOT NULL UNIQUE,
        app            TEXT NOT NULL,
        type           TEXT NOT NULL,
        info           TEXT NOT NULL,
        state          INTEGER NOT NULL,
        reason         TEXT NOT NULL,
        init           INTEGER NOT NULL,
        switchback     INTEGER NOT NULL,
        check_interval INTEGER NOT NULL,
        local_recover  INTEGER NOT NULL CHECK (local_recover IN (0, 1)),
        FOREIGN KEY (app, type) REFERENCES types (app, name)
    );
    CREATE INDEX resources_type ON resources (app, type);
    CREATE TABLE dependencies (
        parent TEXT NOT NULL REFERENCES resources (tag),
        child  TEXT NOT NULL REFERENCES resources (tag),
        PRIMARY KEY (parent, child),
        CHECK (parent <> child)
    );
    CREATE INDEX dependencies_child ON dependencies (child);
    CREATE TABLE equivalencies (
        tag        TEXT NOT NULL REFERENCES resources (tag),
        node       TEXT NOT NULL REFERENCES nodes (name),
        remote_tag TEXT NOT NULL,
        priority   INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 1024),
        kind       INTEGER NOT NULL,
        PRIMARY KEY (tag, node),
        UNIQUE (tag, priority)
    );
    CREATE INDEX equivalencies_node ON equivalencies (node);
    CREATE TABLE flags (
        name TEXT PRIMARY KEY
    );
    CREATE TABLE changes (
        seq   INTEGER PRIMARY KEY AUTOINCREMENT,
        time  REAL NOT NULL,
        actor TEXT NOT NULL,
        op    TEXT NOT NULL,
        args  TEXT NOT NULL
    );
    """,
    # 2: communication paths (LifeKeeper's net_create): several TCP paths per pair of nodes.
    """
    CREATE TABLE comm_paths (
        node        TEXT NOT NULL REFERENCES nodes (name),
        kind        TEXT NOT NULL CHECK (kind IN ('TCP')),
        local_addr  TEXT NOT NULL,
        remote_addr TEXT NOT NULL,
        priority    INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 99),
        PRIMARY KEY (node, local_addr, remote_addr),
        UNIQUE (node, priority)
    );
    """,
    # 3: delivery of replicated configuration changes: what other nodes still have to be told,
    # and which changes from other nodes were applied here (so that a redelivery is harmless).
    """
    CREATE TABLE outbox (
        txid    TEXT NOT NULL,
        node    TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (txid, node)
    );
    CREATE TABLE applied (
        txid TEXT PRIMARY KEY,
        time REAL NOT NULL
    );
    """,
    # 4: mirrored volumes (DataKeeper, issue 14): the administrator's intent only; the live state
    # (Mirroring, Paused...) is the replication process's. Every node of a mirror has its backing
    # store (mirror_stores, the source's included); each target has its mirror's parameters.
    """
    CREATE TABLE mirrors (
        volume TEXT PRIMARY KEY,
        size   INTEGER NOT NULL CHECK (size > 0 AND size % 512 = 0),
        source TEXT NOT NULL REFERENCES nodes (name)
    );
    CREATE TABLE mirror_stores (
        volume TEXT NOT NULL REFERENCES mirrors (volume),
        node   TEXT NOT NULL REFERENCES nodes (name),
        store  TEXT NOT NULL CHECK (substr(store, 1, 1) = '/'),
        PRIMARY KEY (volume, node)
    );
    CREATE INDEX mirror_stores_node ON mirror_stores (node);
    CREATE TABLE mirror_targets (
        volume       TEXT NOT NULL,
        node         TEXT NOT NULL,
        mode         TEXT NOT NULL CHECK (mode IN ('sync', 'async')),
        bitmap_chunk INTEGER NOT NULL CHECK (bitmap_chunk >= 4096 AND (bitmap_chunk & (bitmap_chunk - 1)) = 0),
        rate_limit   INTEGER NOT NULL CHECK (rate_limit >= 0),
        PRIMARY KEY (volume, node),
        FOREIGN KEY (volume, node) REFERENCES mirror_stores (volume, node)
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """Split a migration into statements (migrations hold no ``;`` inside literals)."""
    return [part.strip() for part in script.split(";") if part.strip()]
