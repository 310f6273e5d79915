-- ravend MySQL/MariaDB schema, version 4: clock_flag marks readings whose meter time cannot be
-- taken at its word; the same virtual column as SQLite's 003 (see there for the values):
-- unset, epoch (before 2001-01-01), ahead / behind (more than a day off the host's clock when
-- received; last_period_usage is never 'behind'), NULL when plausible. A virtual column costs
-- no space and no table copy, and rows stored before this migration get it too.
ALTER TABLE readings ADD COLUMN clock_flag VARCHAR(8) AS (
    CASE
        WHEN meter_time IS NULL THEN 'unset'
        WHEN meter_time < 978307200 THEN 'epoch'
        WHEN meter_time > received_at + 86400 THEN 'ahead'
        WHEN meter_time < received_at - 86400 AND kind <> 'last_period_usage' THEN 'behind'
    END
) VIRTUAL
