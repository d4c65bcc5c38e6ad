DROP INDEX audit_events_identity;
DROP INDEX audit_events_email_key;
DROP INDEX customers_email_lookup;
CREATE INDEX customers_email_lookup ON customers (legal_entity, email_key);
DROP TABLE b2b_prospects;
