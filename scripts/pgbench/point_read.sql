\set a random(1, 100000)
SELECT * FROM acct WHERE id = :a;
