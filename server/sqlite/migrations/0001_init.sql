-- Tether's initial schema.
--
-- Times are INTEGER unix nanoseconds in UTC; NULL stands for the zero time
-- ("never", "not yet"). Lists of group names are JSON arrays of strings.

CREATE TABLE tokens (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    secret_hash BLOB    NOT NULL,
    group_list  TEXT    NOT NULL DEFAULT '[]',
    max_uses    INTEGER NOT NULL DEFAULT 0,
    uses        INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX tokens_created ON tokens (created_at, id);

CREATE TABLE agents (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL,
    -- group_list keeps the agent's groups in order; agent_groups indexes them.
    group_list     TEXT    NOT NULL DEFAULT '[]',
    key_hash       BLOB,
    disabled       INTEGER NOT NULL DEFAULT 0,
    hostname       TEXT    NOT NULL DEFAULT '',
    os             TEXT    NOT NULL DEFAULT '',
    arch           TEXT    NOT NULL DEFAULT '',
    version        TEXT    NOT NULL DEFAULT '',
    enrolled_at    INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    enrolled_by    TEXT    NOT NULL DEFAULT '',
    last_seen      INTEGER,
    last_batch_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX agents_name ON agents (name);
CREATE INDEX agents_last_seen ON agents (last_seen);

-- agent_groups lists the members of each group, for group filters and the
-- expansion of group command targets.
CREATE TABLE agent_groups (
    grp      TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    PRIMARY KEY (grp, agent_id)
) WITHOUT ROWID;
CREATE INDEX agent_groups_agent ON agent_groups (agent_id);

CREATE TABLE command_requests (
    id             TEXT    NOT NULL PRIMARY KEY,
    target_type    TEXT    NOT NULL,
    target_id      TEXT    NOT NULL DEFAULT '',
    action_name    TEXT    NOT NULL,
    action_args    BLOB,
    action_version TEXT    NOT NULL DEFAULT '',
    timeout_ns     INTEGER NOT NULL DEFAULT 0,
    source         TEXT    NOT NULL DEFAULT '',
    user_name      TEXT    NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL
);
CREATE INDEX command_requests_created ON command_requests (created_at, id);

-- orders.seq is the rowid: it grows with insertion, so it breaks ties between
-- orders of one agent created at the same time in the order they were made.
CREATE TABLE orders (
    seq            INTEGER PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    request_id     TEXT    NOT NULL REFERENCES command_requests (id) ON DELETE CASCADE,
    agent_id       TEXT    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    action_name    TEXT    NOT NULL,
    action_args    BLOB,
    action_version TEXT    NOT NULL DEFAULT '',
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'success', 'failure')),
    result_code    INTEGER NOT NULL DEFAULT 0,
    result_message TEXT    NOT NULL DEFAULT '',
    result_data    BLOB,
    user_name      TEXT    NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    sent_at        INTEGER,
    received_at    INTEGER,
    finished_at    INTEGER,
    -- timeout_at NULL: the order has no time window.
    timeout_at     INTEGER,
    attempts       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX orders_agent_status ON orders (agent_id, status, created_at);
CREATE INDEX orders_status_timeout ON orders (status, timeout_at);
CREATE INDEX orders_request ON orders (request_id, created_at, id);

-- state holds the latest document of each (agent, module, key). A row whose
-- doc is NULL is a tombstone: the key was deleted by the batch in sequence,
-- and it stops a late retry of an older batch from bringing the key back.
CREATE TABLE state (
    agent_id   TEXT    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    module     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    doc        BLOB,
    sequence   INTEGER NOT NULL,
    updated_at INTEGER,
    PRIMARY KEY (agent_id, module, key)
) WITHOUT ROWID;

CREATE TABLE signing_keys (
    id         TEXT    NOT NULL PRIMARY KEY,
    private    BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);

CREATE TABLE secrets (
    name       TEXT    NOT NULL PRIMARY KEY,
    value      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE group_configs (
    grp        TEXT    NOT NULL PRIMARY KEY,
    doc        BLOB    NOT NULL,
    updated_at INTEGER
);
