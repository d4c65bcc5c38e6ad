-- Customer records of the store (imported, created by administrators, by prospects, or by autolink).
CREATE TABLE customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Commerce customer account number; unique across the environment.
    account_number TEXT NOT NULL UNIQUE,
    -- Legal entity (Commerce data area), upper-case.
    legal_entity TEXT NOT NULL,
    -- 'person' or 'organization'; only persons are candidates.
    party_type TEXT NOT NULL CHECK (party_type IN ('person', 'organization')),
    is_b2b BOOLEAN NOT NULL DEFAULT 0,
    -- The primary email as given (trimmed, NFC); NULL when the record has none.
    primary_email TEXT,
    -- Normalised comparison key of primary_email (DESIGN section 4).
    email_key TEXT,
    first_name TEXT,
    last_name TEXT,
    -- 'import', 'admin', 'prospect' or 'autolink'.
    origin TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT 1,
    -- Set only on customers autolink created while linking was on: '<legal entity>|<email key>'.
    -- Its uniqueness is what makes concurrent sign-ups for one new email create one customer.
    creation_key TEXT UNIQUE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX customers_email_lookup ON customers (legal_entity, email_key);

-- Links from B2C identities (issuer, subject) to customers. Rows are never deleted; an unlinked
-- identity keeps its row with active = 0.
CREATE TABLE identity_links (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    -- 'emailAddress', 'federated', ... as B2C named the account.
    sign_in_type TEXT NOT NULL,
    -- 'local' or the social provider ('google.com'); NULL when unknown.
    identity_provider TEXT,
    -- Normalised email key under which the identity was linked.
    email_key TEXT NOT NULL,
    -- 'auto' or 'admin'.
    linked_by TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT 1,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
-- One active link per identity.
CREATE UNIQUE INDEX identity_links_active_identity ON identity_links (issuer, subject) WHERE active;
CREATE INDEX identity_links_customer ON identity_links (customer_id);

-- Every decision and administrative change, append-only.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TIMESTAMP NOT NULL,
    request_id TEXT NOT NULL,
    -- Who acted: 'b2c' for connector calls, the administrator otherwise.
    actor TEXT NOT NULL,
    -- The endpoint or command, e.g. 'api-connector'.
    source TEXT NOT NULL,
    -- The connector step when there is one.
    step TEXT,
    channel TEXT,
    -- 'Linked', 'Created', 'AlreadyLinked', 'WouldLink', 'WouldCreate', 'Refused', ...
    outcome TEXT NOT NULL,
    -- The refusal code when refused.
    code TEXT,
    email_key TEXT,
    issuer TEXT,
    subject TEXT,
    account_number TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;

-- Credentials generated at first start; only hashes are kept.
CREATE TABLE service_credentials (
    -- 'connector' or 'admin'.
    kind TEXT PRIMARY KEY NOT NULL,
    username TEXT,
    secret_hash TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
