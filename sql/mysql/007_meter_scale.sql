-- ravend MySQL/MariaDB schema, version 7 (issue 17): the [meter <MAC>] scale of a CT meter, as
-- SQLite's 006. value is raw * multiplier / divisor * scale, scale the factor ravend's config
-- gave that meter when the reading arrived (1: none; always 1 for price); raw, multiplier and
-- divisor stay as sent. DECIMAL(13,6) holds every scale the config accepts (at most 1000000,
-- 6 decimal places) exactly. Rows stored before this version were not scaled: they get 1.
ALTER TABLE readings ADD COLUMN scale DECIMAL(13,6) NOT NULL DEFAULT 1 AFTER divisor
