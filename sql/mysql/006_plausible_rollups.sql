-- ravend MySQL/MariaDB schema, version 6 (issue 16): roll-ups leave out readings whose meter
-- time is meaningless (clock_flag epoch, ahead; see 004_clock_flag.sql), as SQLite's
-- 005 does. Roll-ups made from such times are dropped, and every roll-up whose raw readings are
-- still kept is recomputed (forgetting the watermark makes the maintenance thread start over).
--
-- readings.id needs no change here: InnoDB's AUTO_INCREMENT never hands out an id twice, and
-- since MariaDB 10.2.4 (MySQL 8.0) the counter is persisted, so deleting the highest ids and
-- restarting the server does not rewind it either (tests/test_mysql_migrations.py checks it).
-- Older servers reset it to MAX(id) + 1 at start: ravend needs MariaDB >= 10.2.4.
DELETE FROM rollup_hourly WHERE period_start < 978307200
    OR period_start > UNIX_TIMESTAMP() + 86400;
DELETE FROM rollup_daily WHERE period_start < 978307200
    OR period_start > UNIX_TIMESTAMP() + 86400;
DELETE FROM maintenance_state WHERE name = 'rollup_watermark'
