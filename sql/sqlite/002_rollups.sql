-- ravend SQLite schema, version 2: hourly and daily roll-ups, kept after raw readings are
-- purged, and the maintenance bookkeeping. Same tables as MySQL's 003; the exact decimal values
-- are TEXT here (SQLite has no DECIMAL), rounded once to 9 places from exact arithmetic on the
-- raw integers. NULL means "no data" (see sql/mysql/003_rollups.sql).
CREATE TABLE rollup_hourly (
    meter_mac      TEXT    NOT NULL,
    period_start   INTEGER NOT NULL,          -- Unix s UTC, start of the hour
    period_end     INTEGER NOT NULL,          -- exclusive
    demand_samples INTEGER NOT NULL,
    demand_avg_kw  TEXT,
    demand_min_kw  TEXT,
    demand_max_kw  TEXT,
    delivered_kwh  TEXT,
    received_kwh   TEXT,
    energy_seconds INTEGER NOT NULL,
    counter_resets INTEGER NOT NULL,
    updated_at     REAL    NOT NULL,
    PRIMARY KEY (meter_mac, period_start)
);
CREATE INDEX rollup_hourly_by_start ON rollup_hourly (period_start);

CREATE TABLE rollup_daily (
    meter_mac      TEXT    NOT NULL,
    period_start   INTEGER NOT NULL,          -- Unix s UTC of local midnight in time_zone
    period_end     INTEGER NOT NULL,
    day            TEXT    NOT NULL,          -- the local date, YYYY-MM-DD
    time_zone      TEXT    NOT NULL,
    demand_samples INTEGER NOT NULL,
    demand_avg_kw  TEXT,
    demand_min_kw  TEXT,
    demand_max_kw  TEXT,
    delivered_kwh  TEXT,
    received_kwh   TEXT,
    energy_seconds INTEGER NOT NULL,
    counter_resets INTEGER NOT NULL,
    updated_at     REAL    NOT NULL,
    PRIMARY KEY (meter_mac, period_start)
);
CREATE INDEX rollup_daily_by_start ON rollup_daily (period_start);

CREATE TABLE maintenance_state (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
)
