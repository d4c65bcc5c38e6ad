DROP TABLE service_credentials;
DROP TABLE audit_events;
DROP FUNCTION audit_events_append_only();
DROP TABLE identity_links;
DROP TABLE customers;
