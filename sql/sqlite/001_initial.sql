-- ravend SQLite schema, version 1.
-- One row per reading; identity (meter_mac, kind, key_time) makes every write idempotent.
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY,
    meter_mac   TEXT    NOT NULL,             -- '0x' + 16 hex digits, lower case
    kind        TEXT    NOT NULL,             -- demand, summation_delivered, summation_received, price, ...
    key_time    INTEGER NOT NULL,             -- meter time, or host time when the meter clock is unset
    meter_time  INTEGER,                      -- Unix s UTC from the meter; NULL = meter sent "not set"
    received_at REAL    NOT NULL,             -- Unix s UTC on the host
    device_mac  TEXT    NOT NULL,
    raw         INTEGER NOT NULL,             -- signed integer as sent
    multiplier  INTEGER NOT NULL,             -- as sent (0 means 1)
    divisor     INTEGER NOT NULL,             -- as sent (0 means 1)
    value       REAL    NOT NULL,             -- raw * multiplier / divisor (exact: recompute from raw)
    unit        TEXT    NOT NULL,             -- kW, kWh, or <currency>/kWh for price
    UNIQUE (meter_mac, kind, key_time)
);
-- Retention purges and time-range exports walk this index, never the whole table.
CREATE INDEX readings_by_time ON readings (key_time);

-- The latest of every non-reading fragment (DeviceInfo, ConnectionStatus, MeterInfo, unknown
-- fragments ...), as JSON, so `ravenctl info` can show what the device last said.
CREATE TABLE device_state (
    device_mac  TEXT NOT NULL,
    meter_mac   TEXT NOT NULL,                -- '' when the fragment names no meter
    tag         TEXT NOT NULL,
    received_at REAL NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (device_mac, meter_mac, tag)
);
