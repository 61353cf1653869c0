UPDATE tpl SET stock = stock - 1 WHERE id = 1 AND stock > 0;
