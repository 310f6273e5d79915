-- ravend SQLite schema, version 4: the cost of each roll-up period (issue #12), as in MySQL's
-- 005. Exact decimals as TEXT, rounded once to 9 places like the other roll-up values:
--   cost           delivered energy × the price in effect, split at every price change
--                  ([tariff]: the meter's prices or the configured rate or periods); NULL when
--                  some of the period's energy fell where no price is known
--   export_credit  received energy × [tariff] export_rate; NULL when no export_rate is set
--   currency       of both (USD, EUR ...), NULL when unknown
-- Existing roll-ups are recomputed by the maintenance thread from the raw readings that are
-- still kept (forgetting the watermark makes it start over); periods whose raw readings were
-- already purged (before purged_before) keep their roll-ups with a NULL cost.
ALTER TABLE rollup_hourly ADD COLUMN cost TEXT;
ALTER TABLE rollup_hourly ADD COLUMN export_credit TEXT;
ALTER TABLE rollup_hourly ADD COLUMN currency TEXT;
ALTER TABLE rollup_daily ADD COLUMN cost TEXT;
ALTER TABLE rollup_daily ADD COLUMN export_credit TEXT;
ALTER TABLE rollup_daily ADD COLUMN currency TEXT;
DELETE FROM maintenance_state WHERE name = 'rollup_watermark'
