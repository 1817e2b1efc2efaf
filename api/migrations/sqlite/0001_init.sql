-- zedops server state, SQLite (the embedded default). postgres/0001_init.sql is the same schema.
CREATE TABLE tokens (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE agents (
    name                TEXT PRIMARY KEY,
    created_at          TEXT NOT NULL,
    enroll_hash         TEXT,
    enroll_expires      TEXT NOT NULL,
    mqtt_password_hash  TEXT,
    public_key          TEXT,
    enrolled_at         TEXT
);

CREATE TABLE mqtt_users (
    name           TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    ha_commands    INTEGER NOT NULL
);

CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    record  TEXT NOT NULL
);

-- The server's signing key, shared by every replica: one row.
CREATE TABLE server_key (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seed  TEXT NOT NULL
);
