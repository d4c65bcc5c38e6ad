DROP INDEX audit_events_email_bucket;
DROP INDEX audit_events_subject_bucket;
CREATE INDEX audit_events_email_hash ON audit_events (hashtextextended(email_key, 0));
CREATE INDEX audit_events_subject_hash ON audit_events (hashtextextended(subject, 0));
