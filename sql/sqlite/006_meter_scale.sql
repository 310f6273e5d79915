-- ravend SQLite schema, version 6 (issue 17): the [meter <MAC>] scale of a CT meter.
-- value is raw * multiplier / divisor * scale, scale the factor ravend's config gave that meter
-- when the reading arrived (1: none; always 1 for price). raw, multiplier and divisor stay as
-- the meter sent them, so every stored value can be explained and recomputed from its row.
-- Rows stored before this version were not scaled: they get 1.
ALTER TABLE readings ADD COLUMN scale REAL NOT NULL DEFAULT 1
