COMMENT ON INDEX audit_events_identity IS NULL;
COMMENT ON INDEX audit_events_email_key IS NULL;
