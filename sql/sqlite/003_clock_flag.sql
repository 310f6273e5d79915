-- ravend SQLite schema, version 3: clock_flag marks readings whose meter time cannot be taken at
-- its word (issue 7: a meter clock that is unset, reset, far ahead or far behind). The reading is
-- stored once as before, keyed as before; the flag only says what is wrong with its time. It is
-- computed from the row itself (a virtual column: no space, no code, and rows stored before this
-- migration get it too), the same way in both stores (sql/mysql/004_clock_flag.sql):
--   unset   the meter sent TimeStamp 0xffffffff: meter_time is NULL, key_time is the host second
--   epoch   before 2001-01-01: the meter's clock, which counts from 2000-01-01, was reset
--   ahead   more than a day ahead of the host's clock when the reading was received
--   behind  more than a day behind it (not last_period_usage, timed by a past period's end)
-- NULL: plausible. A day of slack covers a meter that sends local time as UTC; a meter some
-- minutes or hours off, or one that steps back a little, keeps meaningful times and no flag.
-- `WHERE clock_flag IS NULL` selects the readings whose meter time can be trusted.
ALTER TABLE readings ADD COLUMN clock_flag TEXT GENERATED ALWAYS AS (
    CASE
        WHEN meter_time IS NULL THEN 'unset'
        WHEN meter_time < 978307200 THEN 'epoch'
        WHEN meter_time > received_at + 86400 THEN 'ahead'
        WHEN meter_time < received_at - 86400 AND kind <> 'last_period_usage' THEN 'behind'
    END
) VIRTUAL
