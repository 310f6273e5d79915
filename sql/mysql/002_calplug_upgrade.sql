-- ravend MySQL/MariaDB schema, version 2: the CalPlug python-raven tables upgraded in place.
--
-- Every old row and column is kept. Old scripts wrote only time (the insert time, by the
-- column default), demand, multiplier, divisor, run and hash; ravend adds the meter, the meter
-- and receive times, the scaled kW, a key and indexes, and flags the rows that do not hold a
-- reading instead of deleting them:
--   flag 'error'    the old scripts' -1/-1/-1 marker of a failed read (kw NULL)
--   flag 'wrapped'  demand stored as an unsigned 32-bit number >= 2^31: a negative demand
--                   (exporting); kw is the sign-extended value
--   flag 'clamped'  demand 2147483647: a negative demand that an INT column clamped, value lost
-- Rows written before this upgrade keep key_time NULL: they are outside the unique key and the
-- retention purge never touches them.
--
-- One ALTER per table, so that each is applied whole or not at all. The time columns lose the
-- implicit ON UPDATE CURRENT_TIMESTAMP that old servers gave the first TIMESTAMP column, so that
-- updating a row can never rewrite its time; inserts without a time still get the current one.
ALTER TABLE instantaneous_demand
    MODIFY COLUMN time TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    MODIFY COLUMN demand BIGINT NULL,
    MODIFY COLUMN multiplier BIGINT NULL,
    MODIFY COLUMN divisor BIGINT NULL,
    ADD COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT FIRST,
    ADD COLUMN meter_mac VARCHAR(40) NULL,
    ADD COLUMN key_time BIGINT NULL,
    ADD COLUMN meter_time BIGINT NULL,
    ADD COLUMN received_at DOUBLE NULL,
    ADD COLUMN kw DECIMAL(30,9) NULL,
    ADD COLUMN flag VARCHAR(16) NULL,
    ADD PRIMARY KEY (id),
    ADD UNIQUE KEY instantaneous_demand_identity (meter_mac, key_time),
    ADD KEY instantaneous_demand_by_key_time (key_time),
    ADD KEY instantaneous_demand_by_time (time),
    ADD KEY instantaneous_demand_by_hash (hash);

ALTER TABLE run_info
    MODIFY COLUMN time TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    ADD COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT FIRST,
    ADD COLUMN software VARCHAR(64) NULL,
    ADD PRIMARY KEY (id),
    ADD KEY run_info_by_hash (hash);

-- (An INT UNSIGNED demand column turned the marker's -1 into 0: multiplier and divisor tell.)
UPDATE instantaneous_demand SET flag = 'error'
    WHERE key_time IS NULL AND multiplier = -1 AND divisor = -1;

UPDATE instantaneous_demand SET flag = 'wrapped'
    WHERE key_time IS NULL AND flag IS NULL AND demand >= 2147483648 AND demand <= 4294967295;

UPDATE instantaneous_demand SET flag = 'clamped'
    WHERE key_time IS NULL AND flag IS NULL AND demand = 2147483647;

UPDATE instantaneous_demand
    SET kw = CAST(IF(flag = 'wrapped', demand - 4294967296, demand) AS DECIMAL(30,9))
             * COALESCE(NULLIF(multiplier, 0), 1) / COALESCE(NULLIF(divisor, 0), 1)
    WHERE key_time IS NULL AND (flag IS NULL OR flag = 'wrapped') AND demand IS NOT NULL;

-- The old rows' time is when the row was inserted, on the host.
UPDATE instantaneous_demand SET received_at = NULLIF(UNIX_TIMESTAMP(time), 0)
    WHERE key_time IS NULL AND time IS NOT NULL;

-- The meter, where the run's run_info row names exactly one.
UPDATE instantaneous_demand d
    JOIN (SELECT hash, MIN(LOWER(meter_id)) AS meter_id FROM run_info
          WHERE meter_id IS NOT NULL AND meter_id <> ''
          GROUP BY hash HAVING COUNT(DISTINCT LOWER(meter_id)) = 1) r ON r.hash = d.hash
    SET d.meter_mac = r.meter_id
    WHERE d.key_time IS NULL AND d.meter_mac IS NULL
