-- Tokens get a kind: who holds them. "user" is a person, "service" is
-- automation (scripts, pipelines, installers); a command request records
-- the kind of the token that sent it as its source. Enrollment tokens
-- (role registrar) are service tokens; every other existing token, the
-- bootstrap admin token among them, was made for a person.

ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'user' CHECK (kind IN ('user', 'service'));
UPDATE tokens SET kind = 'service' WHERE role = 'registrar';
