-- SQLite only: a counter that every change to an existing link, or to a linked customer's account
-- number, moves forward. The sign-in path keeps the links it has resolved in memory, each with the
-- counter it was read at, and uses one only while the counter has not moved
-- (src/linking/signin_cache.rs). Triggers, so that every writer counts, whatever its process:
-- the service, the admin CLI, a hand-written UPDATE. New links do not move it: a new link never
-- changes what an existing one resolves to (an identity has at most one active link, and making
-- room for another is an UPDATE).
CREATE TABLE link_generation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    n INTEGER NOT NULL
);
INSERT INTO link_generation (singleton, n) VALUES (1, 0);
CREATE TRIGGER identity_links_updated AFTER UPDATE ON identity_links
BEGIN
    UPDATE link_generation SET n = n + 1;
END;
CREATE TRIGGER identity_links_deleted AFTER DELETE ON identity_links
BEGIN
    UPDATE link_generation SET n = n + 1;
END;
CREATE TRIGGER customers_account_number_updated AFTER UPDATE OF account_number ON customers
BEGIN
    UPDATE link_generation SET n = n + 1;
END;
CREATE TRIGGER customers_deleted AFTER DELETE ON customers
BEGIN
    UPDATE link_generation SET n = n + 1;
END;
