-- pending_batches lists the event batches whose sequence was accepted
-- (agents.last_batch_seq) but whose delivery to every event sink is not yet
-- confirmed. A row is written in the transaction that accepts the
-- sequence, before the sinks are written, and deleted once they all hold
-- the batch; a row left by a crash tells the agent's retry to complete the
-- delivery instead of skipping it as a duplicate.
CREATE TABLE pending_batches (
    agent_id   TEXT    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    pending_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
