DROP TRIGGER customers_deleted;
DROP TRIGGER customers_account_number_updated;
DROP TRIGGER identity_links_deleted;
DROP TRIGGER identity_links_updated;
DROP TABLE link_generation;
