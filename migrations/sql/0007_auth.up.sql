-- API tokens: who may call the HTTP API and the UI, and with which scope.
-- Only a SHA-256 of each token is stored: the token itself is shown once,
-- by `ordo tokens create`, and cannot be read back from here.
CREATE TABLE api_tokens (
    name         text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    token_sha256 bytea       NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    scope        text        NOT NULL CHECK (scope IN ('read', 'run', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

COMMENT ON TABLE api_tokens IS 'API tokens (ordo tokens create|ls|revoke). While at least one token is not revoked, every API and UI data request must send one as Authorization: Bearer (only /healthz and /readyz stay open). Events caused by a request name its token as actor token:NAME. Servers cache lookups for a few seconds, so a revoked token may work that much longer.';
COMMENT ON COLUMN api_tokens.name IS 'Name of the token, unique forever (a revoked name is not reused, so that token:NAME in the event log always means one token).';
COMMENT ON COLUMN api_tokens.token_sha256 IS 'SHA-256 of the token. The token is 256 random bits, shown once at creation; it is never stored.';
COMMENT ON COLUMN api_tokens.scope IS 'What the token may do: read (GET requests), run (read, and start, cancel and retry runs) or admin (everything: deployments, work queues, River UI actions).';
COMMENT ON COLUMN api_tokens.created_at IS 'When the token was created.';
COMMENT ON COLUMN api_tokens.last_used_at IS 'When a server last accepted the token (each server writes it at most once a minute per token); NULL if never used.';
COMMENT ON COLUMN api_tokens.revoked_at IS 'When the token was revoked (ordo tokens revoke); NULL while it is active.';
