-- ravend MySQL/MariaDB schema, version 1: the same logical schema as SQLite's 001, and the two
-- tables of the CalPlug python-raven scripts in their original layout (002 upgrades them).
--
-- Identity of a reading: (meter_mac, kind, key_time). Every write is an insert that leaves an
-- existing row alone, so a retry after any fault neither loses nor duplicates a reading.
CREATE TABLE IF NOT EXISTS readings (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    meter_mac   VARCHAR(40)   NOT NULL,     -- '0x' + 16 hex digits, lower case
    kind        VARCHAR(32)   NOT NULL,     -- demand, summation_delivered, summation_received, price, ...
    key_time    BIGINT        NOT NULL,     -- meter time, or host time when the meter clock is unset
    meter_time  BIGINT        NULL,         -- Unix s UTC from the meter, NULL = meter sent "not set"
    received_at DOUBLE        NOT NULL,     -- Unix s UTC on the host
    device_mac  VARCHAR(40)   NOT NULL,
    raw         BIGINT        NOT NULL,     -- signed integer as sent
    multiplier  BIGINT        NOT NULL,     -- as sent (0 means 1)
    divisor     BIGINT        NOT NULL,     -- as sent (0 means 1)
    value       DECIMAL(30,9) NULL,         -- raw * multiplier / divisor, rounded to 9 places (NULL: too large)
    unit        VARCHAR(32)   NOT NULL,     -- kW, kWh, or <currency>/kWh for price
    PRIMARY KEY (id),
    UNIQUE KEY readings_identity (meter_mac, kind, key_time),
    -- Retention purges and time-range exports walk this index, never the whole table.
    KEY readings_by_time (key_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The latest of every non-reading fragment (DeviceInfo, ConnectionStatus, ...) as JSON text.
CREATE TABLE IF NOT EXISTS device_state (
    device_mac  VARCHAR(40)  NOT NULL,
    meter_mac   VARCHAR(40)  NOT NULL,      -- '' when the fragment names no meter
    tag         VARCHAR(100) NOT NULL,
    received_at DOUBLE       NOT NULL,
    body        MEDIUMTEXT   NOT NULL,
    PRIMARY KEY (device_mac, meter_mac, tag)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The CalPlug python-raven tables, created here exactly as those scripts had them when they do
-- not exist yet, so that a new database and an upgraded old one take the same path through 002.
CREATE TABLE IF NOT EXISTS instantaneous_demand (
    time       TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    demand     INT,
    multiplier INT,
    divisor    INT,
    run        TEXT,
    hash       VARCHAR(100)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS run_info (
    name     VARCHAR(100),
    hash     VARCHAR(100),
    meter_id VARCHAR(100),
    time     TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
