DROP TRIGGER customers_changed ON customers;
DROP TRIGGER identity_links_changed ON identity_links;
DROP FUNCTION link_generation_move();
DROP TABLE link_generation;
