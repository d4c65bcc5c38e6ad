-- Business (B2B) onboarding requests: recorded, listed while pending, then approved (which creates
-- the organization and the B2B person customer) or rejected. Rows are kept after the decision.
CREATE TABLE b2b_prospects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The requester's email as given (trimmed, NFC) and its normalised key (DESIGN section 4).
    email TEXT NOT NULL,
    email_key TEXT NOT NULL,
    -- Legal entity whose B2B channel the requester will sign up on, upper-case.
    legal_entity TEXT NOT NULL,
    company_name TEXT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    -- Who recorded the request (administrator name).
    requested_by TEXT NOT NULL,
    -- Who decided, and why (the reason of a rejection); NULL while pending.
    decided_by TEXT,
    decided_at TIMESTAMP,
    decision_reason TEXT,
    -- The customers an approval created.
    organization_id INTEGER REFERENCES customers (id),
    person_id INTEGER REFERENCES customers (id),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
-- At most one pending request per email and legal entity.
CREATE UNIQUE INDEX b2b_prospects_one_pending ON b2b_prospects (legal_entity, email_key)
    WHERE status = 'pending';
CREATE INDEX b2b_prospects_status ON b2b_prospects (status, id);

-- Email first: the same index serves the candidate lookup (email and legal entity) and the
-- administrators' search by email across legal entities, without a fourth index on customers
-- (every index costs the bulk import).
DROP INDEX customers_email_lookup;
CREATE INDEX customers_email_lookup ON customers (email_key, legal_entity);

-- The administrators' audit queries by email and by identity.
CREATE INDEX audit_events_email_key ON audit_events (email_key);
CREATE INDEX audit_events_identity ON audit_events (issuer, subject);
