-- A counter that every change to an existing link, or to a linked customer's account number, moves
-- forward, and a notification on channel autolink_links for every move. The sign-in path keeps
-- the links it has resolved in memory and uses one only while nothing has moved since it was read
-- (src/linking/signin_cache.rs). Every instance listens on autolink_links
-- (src/storage/postgres/link_changes.rs) and reads the counter about every second, in case a
-- notification never came. Triggers, so that every writer counts, whatever its process: the
-- service, the admin CLI, a hand-written UPDATE. New links do not move it: a new link never
-- changes what an existing one resolves to (an identity has at most one active link, and making
-- room for another is an UPDATE).
--
-- The triggers are per statement: a statement that changes a thousand links moves the counter
-- once, and one that changes none moves it too (a kept link is then read again, never answered
-- stale). The notification carries the new value. A transaction that moves the counter holds its
-- row until it commits, so such transactions (administrators' changes, not sign-ins or new links)
-- take turns.
CREATE TABLE link_generation (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    n BIGINT NOT NULL
);
INSERT INTO link_generation (singleton, n) VALUES (1, 0);

CREATE FUNCTION link_generation_move() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved BIGINT;
BEGIN
    UPDATE link_generation SET n = n + 1 RETURNING n INTO moved;
    -- Delivered at COMMIT, to every session listening then; nothing if the transaction rolls back.
    PERFORM pg_notify('autolink_links', moved::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER identity_links_changed AFTER UPDATE OR DELETE OR TRUNCATE ON identity_links
FOR EACH STATEMENT EXECUTE FUNCTION link_generation_move();
CREATE TRIGGER customers_changed AFTER UPDATE OF account_number OR DELETE OR TRUNCATE ON customers
FOR EACH STATEMENT EXECUTE FUNCTION link_generation_move();
