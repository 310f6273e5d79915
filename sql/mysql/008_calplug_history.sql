-- ravend MySQL/MariaDB schema, version 8 (issue 20): the CalPlug history brought into readings.
--
-- After the migrations, ravend.calplug_history copies every old instantaneous_demand row that
-- holds a reading (key_time NULL: written by the CalPlug scripts; flag NULL or 'wrapped') into
-- readings as a demand reading, in chunks. This table maps each copied row to the readings row
-- that holds it (the one inserted, or the one already there with the same key): the run, the
-- hash and every other old column stay in instantaneous_demand, reached through it. The copy's
-- progress is maintenance_state's calplug_history_id (the last instantaneous_demand.id done).
CREATE TABLE IF NOT EXISTS calplug_history (
    demand_id  BIGINT UNSIGNED NOT NULL,    -- instantaneous_demand.id
    reading_id BIGINT UNSIGNED NOT NULL,    -- readings.id (purged later by retention, maybe)
    PRIMARY KEY (demand_id),
    KEY calplug_history_by_reading (reading_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
