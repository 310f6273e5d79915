-- ravend MySQL/MariaDB schema, version 5: the cost of each roll-up period (issue #12), as in
-- SQLite's 004:
--   cost           delivered energy x the price in effect, split at every price change
--                  ([tariff]: the meter's prices or the configured rate or periods); NULL when
--                  some of the period's energy fell where no price is known
--   export_credit  received energy x [tariff] export_rate; NULL when no export_rate is set
--   currency       of both (USD, EUR ...), NULL when unknown
-- One ALTER per table, so each is applied whole or not at all (and resumed per statement).
-- Existing roll-ups are recomputed by the maintenance thread from the raw readings that are
-- still kept (forgetting the watermark makes it start over); periods whose raw readings were
-- already purged (before purged_before) keep their roll-ups with a NULL cost.
ALTER TABLE rollup_hourly
    ADD COLUMN cost          DECIMAL(30,9) NULL,
    ADD COLUMN export_credit DECIMAL(30,9) NULL,
    ADD COLUMN currency      VARCHAR(8)    NULL;
ALTER TABLE rollup_daily
    ADD COLUMN cost          DECIMAL(30,9) NULL,
    ADD COLUMN export_credit DECIMAL(30,9) NULL,
    ADD COLUMN currency      VARCHAR(8)    NULL;
DELETE FROM maintenance_state WHERE name = 'rollup_watermark'
