-- ravend MySQL/MariaDB schema, version 3: hourly and daily roll-ups, kept after raw readings are
-- purged, and the maintenance bookkeeping (roll-up watermark, purge horizon).
--
-- One row per meter and period, recomputed exactly from the raw readings whenever a reading in
-- (or, for energy, spread into) the period arrives. Values are rounded once, to 9 places, from
-- exact arithmetic on the raw integers. A NULL means "no data": no demand sample in the period,
-- or no pair of summations spanning any of it. A cost column (issue #12) adds to these tables:
-- energy per period is already split at period boundaries.
CREATE TABLE IF NOT EXISTS rollup_hourly (
    meter_mac      VARCHAR(40)   NOT NULL,
    period_start   BIGINT        NOT NULL,  -- Unix s UTC, start of the hour
    period_end     BIGINT        NOT NULL,  -- exclusive
    demand_samples INT           NOT NULL,  -- demand readings in the period
    demand_avg_kw  DECIMAL(30,9) NULL,      -- mean of the samples
    demand_min_kw  DECIMAL(30,9) NULL,
    demand_max_kw  DECIMAL(30,9) NULL,
    delivered_kwh  DECIMAL(30,9) NULL,      -- from summation_delivered deltas, spread over time
    received_kwh   DECIMAL(30,9) NULL,      -- from summation_received deltas, spread over time
    energy_seconds INT           NOT NULL,  -- seconds of the period covered by delivered deltas
    counter_resets INT           NOT NULL,  -- summations that went down (reset/new meter): not counted
    updated_at     DOUBLE        NOT NULL,
    PRIMARY KEY (meter_mac, period_start),
    KEY rollup_hourly_by_start (period_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS rollup_daily (
    meter_mac      VARCHAR(40)   NOT NULL,
    period_start   BIGINT        NOT NULL,  -- Unix s UTC of local midnight in time_zone
    period_end     BIGINT        NOT NULL,  -- next local midnight (23 or 25 h away on DST days)
    day            DATE          NOT NULL,  -- the local date
    time_zone      VARCHAR(64)   NOT NULL,
    demand_samples INT           NOT NULL,
    demand_avg_kw  DECIMAL(30,9) NULL,
    demand_min_kw  DECIMAL(30,9) NULL,
    demand_max_kw  DECIMAL(30,9) NULL,
    delivered_kwh  DECIMAL(30,9) NULL,
    received_kwh   DECIMAL(30,9) NULL,
    energy_seconds INT           NOT NULL,
    counter_resets INT           NOT NULL,
    updated_at     DOUBLE        NOT NULL,
    PRIMARY KEY (meter_mac, period_start),
    KEY rollup_daily_by_start (period_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- rollup_watermark: readings.id up to which roll-ups are done; purged_before: key_time below
-- which raw readings may have been purged (roll-ups of older periods are never recomputed).
CREATE TABLE IF NOT EXISTS maintenance_state (
    name  VARCHAR(64) NOT NULL,
    value BIGINT      NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
