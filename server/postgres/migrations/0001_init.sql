-- Tether's schema on PostgreSQL: the same tables, columns and rules as the
-- SQLite store's schema (server/sqlite/migrations, up to its version 5).
--
-- Times are timestamptz (microseconds); NULL stands for the zero time
-- ("never", "not yet"). Lists of group names are text[] in their order.
-- Numbers are bigint, as SQLite's INTEGER is 64 bits.
-- Identifiers, names, modules and keys are compared byte by byte (COLLATE
-- "C"), whatever the database's locale, so that lists sort the same way on
-- every store. Documents (arguments, results, state, configuration) are
-- bytea: the server stores the bytes it was given, never re-encoded.

CREATE TABLE tokens (
    id          text COLLATE "C" NOT NULL PRIMARY KEY,
    name        text        NOT NULL,
    role        text        NOT NULL,
    -- kind: who holds it, a person (user) or automation (service).
    kind        text        NOT NULL DEFAULT 'user' CHECK (kind IN ('user', 'service')),
    secret_hash bytea       NOT NULL,
    group_list  text[]      NOT NULL DEFAULT '{}',
    max_uses    bigint      NOT NULL DEFAULT 0,
    uses        bigint      NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL,
    created_by  text        NOT NULL DEFAULT ''
);
CREATE INDEX tokens_created ON tokens (created_at, id);
CREATE INDEX tokens_role ON tokens (role);

CREATE TABLE agents (
    id             text COLLATE "C" NOT NULL PRIMARY KEY,
    name           text COLLATE "C" NOT NULL,
    -- group_list keeps the agent's groups in order; agent_groups indexes them.
    group_list     text[]      NOT NULL DEFAULT '{}',
    key_hash       bytea,
    disabled       boolean     NOT NULL DEFAULT false,
    hostname       text        NOT NULL DEFAULT '',
    os             text        NOT NULL DEFAULT '',
    arch           text        NOT NULL DEFAULT '',
    version        text        NOT NULL DEFAULT '',
    enrolled_at    timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    enrolled_by    text        NOT NULL DEFAULT '',
    last_seen      timestamptz,
    last_batch_seq bigint      NOT NULL DEFAULT 0
);
CREATE INDEX agents_name ON agents (name);
CREATE INDEX agents_last_seen ON agents (last_seen);

-- agent_groups lists the members of each group, for group filters and the
-- expansion of group command targets.
CREATE TABLE agent_groups (
    grp      text COLLATE "C" NOT NULL,
    agent_id text COLLATE "C" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    PRIMARY KEY (grp, agent_id)
);
CREATE INDEX agent_groups_agent ON agent_groups (agent_id);

-- groups: the groups an operator created. Agents may name groups that have
-- no row here; membership is agents.group_list and agent_groups.
CREATE TABLE groups (
    name        text COLLATE "C" NOT NULL PRIMARY KEY,
    description text        NOT NULL DEFAULT '',
    -- config is the YAML source as the operator wrote it (NULL: none);
    -- config_json the same document as a JSON object.
    config      bytea,
    config_json bytea       NOT NULL DEFAULT '{}',
    -- version is a hash of config_json, computed by the server.
    version     text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE command_requests (
    id             text COLLATE "C" NOT NULL PRIMARY KEY,
    target_type    text        NOT NULL,
    target_id      text        NOT NULL DEFAULT '',
    action_name    text        NOT NULL,
    action_args    bytea,
    action_version text        NOT NULL DEFAULT '',
    timeout_ns     bigint      NOT NULL DEFAULT 0,
    source         text        NOT NULL DEFAULT '',
    user_name      text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL
);
CREATE INDEX command_requests_created ON command_requests (created_at, id);

-- orders.seq grows with insertion: it breaks ties between orders of one
-- agent created at the same time, in the order they were stored. No foreign
-- key on agents: the orders of a deleted agent stay, finished. agent_id NULL
-- marks an order the server executes itself.
CREATE TABLE orders (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             text COLLATE "C" NOT NULL UNIQUE,
    request_id     text COLLATE "C" NOT NULL REFERENCES command_requests (id) ON DELETE CASCADE,
    agent_id       text COLLATE "C",
    action_name    text        NOT NULL,
    action_args    bytea,
    action_version text        NOT NULL DEFAULT '',
    status         text        NOT NULL CHECK (status IN ('pending', 'sent', 'success', 'failure')),
    result_code    bigint      NOT NULL DEFAULT 0,
    result_message text        NOT NULL DEFAULT '',
    result_data    bytea,
    user_name      text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL,
    sent_at        timestamptz,
    received_at    timestamptz,
    finished_at    timestamptz,
    -- timeout_at NULL: the order has no time window.
    timeout_at     timestamptz,
    attempts       bigint      NOT NULL DEFAULT 0,
    -- The groups the agent was in when the order was created, in its order.
    agent_groups   text[]      NOT NULL DEFAULT '{}'
);
-- Delivery to an agent, and claims of server orders (agent_id IS NULL):
-- only the unfinished orders.
CREATE INDEX orders_open ON orders (agent_id, created_at, seq) WHERE status IN ('pending', 'sent');
-- The sweeper.
CREATE INDEX orders_open_timeout ON orders (timeout_at) WHERE status IN ('pending', 'sent');
-- A request's orders and their counts by status.
CREATE INDEX orders_request ON orders (request_id, created_at, id);
-- Order lists: all, by agent, by status.
CREATE INDEX orders_created ON orders (created_at, id);
CREATE INDEX orders_agent_created ON orders (agent_id, created_at, id);
CREATE INDEX orders_status_created ON orders (status, created_at, id);
-- Retention.
CREATE INDEX orders_finished ON orders (finished_at, id);

-- state holds the latest document of each (agent, module, key). A row whose
-- doc is NULL is a tombstone: the key was deleted by the batch in sequence,
-- and it stops a late retry of an older batch from bringing the key back.
CREATE TABLE state (
    agent_id   text COLLATE "C" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    module     text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    doc        bytea,
    sequence   bigint      NOT NULL,
    updated_at timestamptz,
    PRIMARY KEY (agent_id, module, key)
);

-- pending_batches lists the event batches whose sequence was accepted
-- (agents.last_batch_seq) but whose delivery to every event sink is not yet
-- confirmed (see the BatchStore contract).
CREATE TABLE pending_batches (
    agent_id   text COLLATE "C" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL,
    pending_at timestamptz NOT NULL,
    PRIMARY KEY (agent_id, seq)
);

CREATE TABLE signing_keys (
    id         text COLLATE "C" NOT NULL PRIMARY KEY,
    private    bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    retired_at timestamptz
);

-- secrets: named cluster secrets (the CA, the release-signing key), written
-- once by the first node that needs them.
CREATE TABLE secrets (
    name       text COLLATE "C" NOT NULL PRIMARY KEY,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL
);
