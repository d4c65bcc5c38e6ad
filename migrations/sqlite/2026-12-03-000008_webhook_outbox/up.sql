-- What the store is told (src/webhooks/): each change (a customer created, an identity linked,
-- unlinked or moved) writes its event here in the same transaction as the change, so a crash
-- between the commit and a delivery loses nothing.
--
-- Positions come from event_sequence, moved by the transaction that writes the events. On
-- PostgreSQL the transaction then holds that row until it commits, so positions are handed out
-- in commit order and the pull feed (GET /admin/v1/events) never passes over an event that
-- commits later with a smaller position. SQLite has one writer at a time: the same holds.
CREATE TABLE event_sequence (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    n BIGINT NOT NULL
);
INSERT INTO event_sequence (singleton, n) VALUES (1, 0);

CREATE TABLE webhook_events (
    -- The row id on SQLite (one B-tree fewer per event).
    position INTEGER PRIMARY KEY NOT NULL,
    -- The webhook-id of every delivery of the event, and its id in the feed.
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    at TIMESTAMP NOT NULL,
    -- The body's "data" object, JSON, without the email.
    data TEXT NOT NULL,
    -- The full email, kept only when a webhook that receives the event has include_email.
    email TEXT
);

-- One row per event and subscribed webhook, written with the event.
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_position BIGINT NOT NULL REFERENCES webhook_events (position),
    url TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Attempts started (counted when an instance claims the delivery).
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    -- Pending: when the next attempt is due; while an attempt runs, when its claim lapses.
    next_attempt_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (event_position, url)
);
-- The dispatcher claims the due deliveries of the endpoints it is not pausing (a dead endpoint's
-- backlog is never read while it is paused).
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (url, next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries (status, id);
