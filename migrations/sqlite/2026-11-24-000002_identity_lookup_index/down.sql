DROP INDEX identity_links_identity;
