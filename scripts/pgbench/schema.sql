-- The bare tables the pgbench scripts measure: the database's own ceiling for one hot row
-- and for spread rows, with synchronous_commit left on.
CREATE TABLE tpl (id int PRIMARY KEY, stock bigint NOT NULL, claimed bigint NOT NULL);
INSERT INTO tpl VALUES (1, 1000000000000, 0);
CREATE TABLE uc (id bigserial PRIMARY KEY, tpl int NOT NULL, member int NOT NULL);
CREATE TABLE acct (id int PRIMARY KEY, pts bigint NOT NULL, version bigint NOT NULL);
INSERT INTO acct SELECT g, 1000000000, 0 FROM generate_series(1, 100000) g;
CREATE TABLE ptx (id bigserial PRIMARY KEY, acct int NOT NULL, amount bigint NOT NULL);
VACUUM ANALYZE;
