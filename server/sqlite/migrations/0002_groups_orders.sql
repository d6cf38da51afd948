-- Groups, and orders that outlive their agent or belong to the server.
--
-- 1. groups: the groups an operator created, with a description and a
--    configuration document. Agents may still name groups that have no row
--    here (an enrollment token may name any group): membership stays in
--    agents.group_list and its index agent_groups.
-- 2. orders is rebuilt without its foreign key on agents, so that deleting
--    an agent keeps its orders (the store fails the unfinished ones with
--    "agent deleted"), and with agent_id nullable: NULL marks an order the
--    server executes itself (a request aimed at the server).

CREATE TABLE groups (
    name        TEXT    NOT NULL PRIMARY KEY,
    description TEXT    NOT NULL DEFAULT '',
    -- config is the YAML source as the operator wrote it (NULL: none);
    -- config_json the same document as a JSON object.
    config      BLOB,
    config_json BLOB    NOT NULL DEFAULT '{}',
    -- version is a hash of config_json, computed by the server.
    version     TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- group_configs had no writer in any release; its rows, if any, become
-- groups whose version the server computes on their next update.
INSERT INTO groups (name, config_json, created_at, updated_at)
    SELECT grp, CASE WHEN length(doc) > 0 THEN doc ELSE '{}' END,
        coalesce(updated_at, 0), coalesce(updated_at, 0)
    FROM group_configs;
DROP TABLE group_configs;

-- orders.seq is the rowid: it grows with insertion, so it breaks ties between
-- orders of one agent created at the same time in the order they were made.
CREATE TABLE orders_new (
    seq            INTEGER PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    request_id     TEXT    NOT NULL REFERENCES command_requests (id) ON DELETE CASCADE,
    -- agent_id NULL: the server executes the order. No foreign key: the
    -- orders of a deleted agent stay, finished.
    agent_id       TEXT,
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
INSERT INTO orders_new (seq, id, request_id, agent_id, action_name, action_args, action_version,
        status, result_code, result_message, result_data, user_name,
        created_at, sent_at, received_at, finished_at, timeout_at, attempts)
    SELECT seq, id, request_id, agent_id, action_name, action_args, action_version,
        status, result_code, result_message, result_data, user_name,
        created_at, sent_at, received_at, finished_at, timeout_at, attempts
    FROM orders;
DROP TABLE orders;
ALTER TABLE orders_new RENAME TO orders;

-- Delivery to an agent, and claims of server orders (agent_id IS NULL).
CREATE INDEX orders_agent_status ON orders (agent_id, status, created_at);
-- The sweeper.
CREATE INDEX orders_status_timeout ON orders (status, timeout_at);
-- A request's orders and their counts by status.
CREATE INDEX orders_request ON orders (request_id, created_at, id);
-- Order lists: all, by agent, by status.
CREATE INDEX orders_created ON orders (created_at, id);
CREATE INDEX orders_agent_created ON orders (agent_id, created_at, id);
CREATE INDEX orders_status_created ON orders (status, created_at, id);
-- Retention.
CREATE INDEX orders_finished ON orders (finished_at, id);
