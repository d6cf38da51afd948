-- Orders keep the groups their agent was in when they were created (a JSON
-- array, in the agent's order), for queries and for the archived record.
-- Orders created before this migration get the agent's groups of today.

ALTER TABLE orders ADD COLUMN agent_groups TEXT NOT NULL DEFAULT '[]';
UPDATE orders SET agent_groups = coalesce((SELECT group_list FROM agents WHERE agents.id = orders.agent_id), '[]');
