DROP TABLE service_credentials;
DROP TABLE audit_events;
DROP TABLE identity_links;
DROP TABLE customers;
