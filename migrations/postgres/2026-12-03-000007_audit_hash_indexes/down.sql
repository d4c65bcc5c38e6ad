DROP INDEX audit_events_email_hash;
DROP INDEX audit_events_subject_hash;
CREATE INDEX audit_events_email_key ON audit_events (email_key);
CREATE INDEX audit_events_identity ON audit_events (issuer, subject);
