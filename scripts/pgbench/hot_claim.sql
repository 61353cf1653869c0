\set m random(1, 1000000000)
BEGIN;
UPDATE tpl SET stock = stock - 1, claimed = claimed + 1 WHERE id = 1 AND stock > 0;
INSERT INTO uc(tpl, member) VALUES (1, :m);
COMMIT;
