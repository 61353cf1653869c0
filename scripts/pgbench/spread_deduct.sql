\set a random(1, 100000)
BEGIN;
UPDATE acct SET pts = pts - 1, version = version + 1 WHERE id = :a AND pts >= 1;
INSERT INTO ptx(acct, amount) VALUES (:a, -1);
COMMIT;
