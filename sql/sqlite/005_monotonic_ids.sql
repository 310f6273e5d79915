-- ravend SQLite schema, version 5: readings.id becomes a monotonic sequence (issue 16).
-- Before, id was an INTEGER PRIMARY KEY without AUTOINCREMENT, so SQLite handed out
-- MAX(id) + 1: when a purge by time deleted the highest ids (readings of a meter whose clock had
-- reset to 2000, rolled up and purged first), the next rows got those ids again, below the
-- repeater's watermark and the roll-up watermark, and were never published nor rolled up.
-- With AUTOINCREMENT an id is never given twice (sqlite_sequence keeps the highest ever given).
--
-- SQLite cannot add AUTOINCREMENT in place: the table is rebuilt with every row, id, column and
-- index as it was (clock_flag stays a virtual column computed from the row). The migration runs
-- in one transaction (ravend.sinks.sqlite.migrate): interrupted, it leaves the store at
-- version 4, untouched. It needs free disk space for a second copy of the readings for a while.
-- The sequence starts above the highest id still stored and above the roll-up watermark (an id
-- already handed out before, then purged).
--
-- Roll-ups now leave out readings whose meter time is meaningless (clock_flag epoch, ahead):
-- roll-ups made from them are dropped and all roll-ups whose raw readings are kept are
-- recomputed (the watermark is forgotten), as 004 did.
CREATE TABLE readings_v5 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_mac   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    key_time    INTEGER NOT NULL,
    meter_time  INTEGER,
    received_at REAL    NOT NULL,
    device_mac  TEXT    NOT NULL,
    raw         INTEGER NOT NULL,
    multiplier  INTEGER NOT NULL,
    divisor     INTEGER NOT NULL,
    value       REAL    NOT NULL,
    unit        TEXT    NOT NULL,
    clock_flag  TEXT GENERATED ALWAYS AS (
        CASE
            WHEN meter_time IS NULL THEN 'unset'
            WHEN meter_time < 978307200 THEN 'epoch'
            WHEN meter_time > received_at + 86400 THEN 'ahead'
            WHEN meter_time < received_at - 86400 AND kind <> 'last_period_usage' THEN 'behind'
        END
    ) VIRTUAL,
    UNIQUE (meter_mac, kind, key_time)
);
INSERT INTO readings_v5 (id, meter_mac, kind, key_time, meter_time, received_at, device_mac,
                         raw, multiplier, divisor, value, unit)
    SELECT id, meter_mac, kind, key_time, meter_time, received_at, device_mac, raw, multiplier,
           divisor, value, unit FROM readings ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'readings_v5';
INSERT INTO sqlite_sequence (name, seq) VALUES ('readings_v5', MAX(
    (SELECT COALESCE(MAX(id), 0) FROM readings),
    (SELECT COALESCE(MAX(value), 0) FROM maintenance_state WHERE name = 'rollup_watermark')));
DROP TABLE readings;
ALTER TABLE readings_v5 RENAME TO readings;
CREATE INDEX readings_by_time ON readings (key_time);
DELETE FROM rollup_hourly WHERE period_start < 978307200
    OR period_start > CAST(strftime('%s', 'now') AS INTEGER) + 86400;
DELETE FROM rollup_daily WHERE period_start < 978307200
    OR period_start > CAST(strftime('%s', 'now') AS INTEGER) + 86400;
DELETE FROM maintenance_state WHERE name = 'rollup_watermark'
