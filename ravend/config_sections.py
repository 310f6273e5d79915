"""The settings of ravend.conf: one frozen dataclass per section, each key with its default
next to why it is what it is, and how the file's text becomes its value (ravend.config_values).

etc/ravend.conf repeats the defaults with comments for users. Reading the file into these is
ravend.config's job, the rules across keys ravend.config_checks'; everything here is also
importable from ravend.config, where the rest of ravend takes it from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ravend.config_values import (
    absolute_path,
    boolean,
    currency_code,
    duration,
    integer,
    listen_address,
    meter_scale,
    mongo_name,
    mongo_uri,
    mqtt_client_id,
    mqtt_filter,
    mqtt_share_group,
    mqtt_topic,
    number,
    one_of,
    optional_price,
    optional_time_zone,
    text,
    time_zone,
    tou_periods,
    web_listen,
)

if TYPE_CHECKING:
    from ravend.tariff import Rule

DEFAULT_STATE_DIR = Path("/var/lib/ravend")
DEFAULT_SQLITE_NAME = Path("ravend.db")


# Each key's parser is in ravend.config_values: it returns the value or raises ValueError saying
# what was expected, which ravend.config puts after the file, line, section and key.


def opt(name: str, parse: Callable[[str], Any], default: Any, *, low: float | None = None,
        high: float | None = None) -> Any:
    """A config key: its parser and bounds travel in the dataclass field's metadata."""
    return field(default=default, metadata={"parse": parse, "low": low, "high": high, "doc": name})


# --- sections ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceConfig:
    # Where the SQLite store, outboxes and other state live (systemd's StateDirectory).
    state_dir: Path = opt("state directory", Path, DEFAULT_STATE_DIR)  # noqa: RUF009 - a field()
    log_level: str = opt("log level", one_of("debug", "info", "warning", "error"), "info")
    # Group commit: readings are written at most this long after they arrive, or sooner when
    # `batch_size` are waiting. One second keeps latency low and a Pi's SD card happy.
    commit_interval: float = opt("commit interval", duration, 1.0, low=0.01, high=60)
    batch_size: int = opt("batch size", integer, 500, low=1, high=100_000)
    # Readings waiting in memory per sink before they go to its on-disk outbox instead. Each
    # waiting reading costs about 600 bytes, and the process keeps the high-water mark.
    queue_size: int = opt("queue size", integer, 2_000, low=100, high=10_000_000)
    # Unix socket for `ravenctl device|price|period|schedule|...` (systemd's RuntimeDirectory);
    # empty: no control socket.
    control_socket: str = opt("control socket", text, "/run/ravend/control")
    # Control-socket clients served at once; more are refused with one line (no thread each).
    control_clients: int = opt("control clients", integer, 8, low=1, high=256)
    # Meters given a Home Assistant device and metric series; readings of any further meter
    # are still stored and published. A house has one meter: many MACs are noise on the wire.
    max_meters: int = opt("tracked meters", integer, 4, low=1, high=1000)
    # After a failure, every sink retries (replaying its outbox), the MQTT commands reconnect
    # and a part that failed restarts after retry_min, doubling up to retry_max. Unset (None):
    # [device] reconnect_min and reconnect_max, which set this pace before these keys existed.
    retry_min: float | None = opt("minimum retry delay", duration, None, low=0.01, high=3600)
    retry_max: float | None = opt("maximum retry delay", duration, None, low=0.01, high=3600)


@dataclass(frozen=True)
class DeviceConfig:
    # `auto` finds the stick (udev symlink /dev/raven, /dev/serial/by-id, then USB ids); or a
    # path such as /dev/ttyUSB0, or a pyserial URL (socket://host:port, rfc2217://host:port).
    port: str = opt("port", text, "auto")
    model: str = opt("model", one_of("auto", "raven", "emu2"), "auto")
    baudrate: int = opt("baud rate", integer, 115200, low=1200, high=4_000_000)
    # Poll for demand when the device has pushed none for this long.
    demand_poll_after: float = opt("demand poll delay", duration, 60.0, low=1, high=86400)
    # Ask for the summation this often (devices push it only every few minutes).
    summation_interval: float = opt("summation interval", duration, 300.0, low=10, high=86400)
    # Devices answer slowly (~4 s) and drop commands sent back to back.
    command_spacing: float = opt("command spacing", duration, 1.0, low=0, high=60)
    reply_timeout: float = opt("reply timeout", duration, 10.0, low=0.1, high=300)
    # No byte at all for this long → the link is dead (a half-open TCP link says nothing).
    silence_timeout: float = opt("silence timeout", duration, 300.0, low=1, high=86400)
    # Reopen delays double from reconnect_min up to reconnect_max. They are also the retry
    # pace of [service], [repeater] and [mongo] where those leave retry_min or retry_max unset.
    reconnect_min: float = opt("minimum reconnect delay", duration, 1.0, low=0.01, high=3600)
    reconnect_max: float = opt("maximum reconnect delay", duration, 60.0, low=0.01, high=3600)
    # `ravenctl status` exits non-zero when the newest reading is older than this.
    stale_after: float = opt("stale after", duration, 300.0, low=1, high=10 * 86400)


@dataclass(frozen=True)
class SqliteConfig:
    enabled: bool = opt("enabled", boolean, True)
    # Relative paths are under [service] state_dir.
    path: Path = opt("database path", Path, DEFAULT_SQLITE_NAME)  # noqa: RUF009 - a field()


@dataclass(frozen=True)
class MqttConfig:
    """The MQTT sink of ravend; ravend-repeater (and other companions) reuse the broker keys."""

    enabled: bool = opt("enabled", boolean, False)
    host: str = opt("broker host", text, "localhost")
    port: int = opt("broker port", integer, 1883, low=1, high=65535)
    tls: bool = opt("TLS", boolean, False)
    # TLS files; an empty ca_file means the system's CA certificates.
    ca_file: str = opt("CA certificate file", text, "")
    cert_file: str = opt("client certificate file", text, "")
    key_file: str = opt("client key file", text, "")
    # The certificate chain is always verified; this only skips the host name check.
    tls_insecure: bool = opt("skip the host name check", boolean, False)
    username: str = opt("user name", text, "")
    password: str = opt("password", text, "")
    # Preferred over `password`: the first line of a file only the service user may read.
    password_file: str = opt("password file", text, "")
    # Stable across restarts (a broker keys sessions by it); %h is the host name.
    client_id: str = opt("client id", mqtt_client_id, "ravend-%h")
    keepalive: float = opt("keepalive", duration, 60.0, low=5, high=65535)
    # 1: every message acknowledged by the broker before the outbox lets go of it.
    qos: int = opt("QoS", integer, 1, low=0, high=2)
    topic_prefix: str = opt("topic prefix", mqtt_topic, "ravend")
    # Readings and device state retained: a new subscriber sees the latest value at once.
    retain_state: bool = opt("retain state", boolean, True)
    discovery: bool = opt("Home Assistant discovery", boolean, True)
    discovery_prefix: str = opt("discovery prefix", mqtt_topic, "homeassistant")
    # Cap of the on-disk outbox that holds readings while the broker is unreachable.
    spool_max_mb: float = opt("spool size cap", number, 100.0, low=1, high=1_000_000)
    # A batch not fully acknowledged within this time counts as a failure (spool, reconnect).
    publish_timeout: float = opt("publish timeout", duration, 10.0, low=0.1, high=3600)
    # Meter commands over MQTT (<prefix>/<device mac>/cmd/<name>): off unless asked for; the
    # broker's ACLs then decide who may send them. Restarting the stick needs its own yes.
    allow_commands: bool = opt("MQTT commands", boolean, False)
    allow_restart: bool = opt("restart over MQTT", boolean, False)


@dataclass(frozen=True)
class RepeaterConfig:
    """ravend-repeater: rows of the SQL store after a watermark → MQTT, as [mqtt] says."""

    # Whether ravend-repeater may run: it refuses to start (78) otherwise, rather than publish
    # to a localhost broker nobody chose. Unset: load() decides (companion_enabled).
    enabled: bool | None = opt("enabled", boolean, None)
    source: str = opt("source store", one_of("sqlite", "mysql"), "sqlite")
    batch_size: int = opt("batch size", integer, 500, low=1, high=10_000)
    # Idle: look for new rows after 50 ms, doubling up to this.
    poll_interval: float = opt("poll interval", duration, 1.0, low=0.05, high=3600)
    # Relative paths are under [service] state_dir.
    watermark_file: Path = opt("watermark", Path, Path("repeater.watermark"))  # noqa: RUF009
    # Without a watermark file: publish the whole store (oldest) or only new rows (newest).
    start: str = opt("start", one_of("oldest", "newest"), "oldest")
    client_id: str = opt("client id", mqtt_client_id, "ravend-repeater-%h")
    # After a failure of the store or the broker: retry after retry_min, doubling up to
    # retry_max. Unset (None): [device] reconnect_min and reconnect_max, as before these keys.
    retry_min: float | None = opt("minimum retry delay", duration, None, low=0.01, high=3600)
    retry_max: float | None = opt("maximum retry delay", duration, None, low=0.01, high=3600)


@dataclass(frozen=True)
class MysqlConfig:
    """The MySQL/MariaDB sink (python3-mysqldb); ravenctl and the repeater reuse its connection."""

    enabled: bool = opt("enabled", boolean, False)
    host: str = opt("server host", text, "localhost")
    port: int = opt("server port", integer, 3306, low=1, high=65535)
    # A local server's socket; when set, host and port are not used.
    unix_socket: str = opt("unix socket", text, "")
    user: str = opt("user", text, "ravend")
    password: str = opt("password", text, "")
    # Preferred over `password`: the first line of a file only the service user may read.
    password_file: str = opt("password file", text, "")
    database: str = opt("database", text, "ravend")
    # TLS: any of these turns it on (and then a server without TLS is refused).
    ssl_ca: str = opt("CA certificate file", text, "")
    ssl_cert: str = opt("client certificate file", text, "")
    ssl_key: str = opt("client key file", text, "")
    # Check that the server's certificate names `host` (the chain is checked against ssl_ca).
    ssl_verify_server_cert: bool = opt("verify the server certificate", boolean, True)
    connect_timeout: float = opt("connect timeout", duration, 10.0, low=1, high=3600)
    # A query unanswered this long means a lost server: reconnect and retry (spooling meanwhile).
    query_timeout: float = opt("query timeout", duration, 60.0, low=1, high=86400)
    # The CalPlug scripts' `run` column and run_info.name.
    run_name: str = opt("run name", text, "ravend")
    # Also fill the CalPlug python-raven tables (instantaneous_demand, run_info).
    calplug_tables: bool = opt("CalPlug tables", boolean, True)
    # Cap of the on-disk outbox that holds readings while the server is unreachable.
    spool_max_mb: float = opt("spool size cap", number, 100.0, low=1, high=1_000_000)


@dataclass(frozen=True)
class RetentionConfig:
    """Roll-ups and purges of the SQL stores, done by ravend's maintenance thread."""

    # Raw readings older than this are purged once rolled up; 0 keeps them forever. 400 days
    # keep a year and a month for comparisons and cost a Pi about 0.75 GB of SQLite at the
    # default push rates (a demand every 8 s).
    raw_days: int = opt("raw retention", integer, 400, low=0, high=100_000)
    # Hourly and daily roll-ups older than this are purged; 0 keeps them forever.
    rollup_days: int = opt("roll-up retention", integer, 0, low=0, high=100_000)
    rollups: bool = opt("roll-ups", boolean, True)
    # Local days of the daily roll-ups: `local` (the host's zone) or a name such as Europe/Paris.
    time_zone: str = opt("time zone", time_zone, "local")
    rollup_interval: float = opt("roll-up interval", duration, 300.0, low=1, high=86400)
    purge_interval: float = opt("purge interval", duration, 3600.0, low=1, high=30 * 86400)
    # At most this many rows per purge transaction (fewer when that takes over ~50 ms), and the
    # pause between two: the writer waits for one short transaction at most.
    purge_chunk: int = opt("purge chunk", integer, 2000, low=10, high=1_000_000)
    purge_pause: float = opt("purge pause", duration, 0.05, low=0, high=60)
    # SQLite only: past this size, purge the oldest (rolled-up) raw readings too; 0: no cap.
    max_db_mb: float = opt("SQLite size cap", number, 0.0, low=0, high=10_000_000)


#: [mongo] uri when nothing is set.
DEFAULT_MONGO_URI = "mongodb://localhost:27017/"


@dataclass(frozen=True)
class MongoConfig:
    """ravend-mongo-ingest: readings from the broker of [mqtt] → a MongoDB collection."""

    # Whether ravend-mongo-ingest may run (as [repeater] enabled).
    enabled: bool | None = opt("enabled", boolean, None)
    # Authentication, TLS and replica sets are options of the URI (see ravend-mongo-ingest(8)).
    uri: str = opt("MongoDB URI", mongo_uri, DEFAULT_MONGO_URI)
    # Preferred when the URI holds a password: the first line of a file only the service user
    # may read; read again at each connection.
    uri_file: str = opt("MongoDB URI file", text, "")
    database: str = opt("database", mongo_name("database", '/\\. "$'), "ravend")
    collection: str = opt("collection", mongo_name("collection", "$"), "readings")
    # Empty: <[mqtt] topic_prefix>/+/+, the reading topics and nothing else.
    topic_filter: str = opt("topic filter", mqtt_filter, "")
    # Several ingests with the same group share the messages ($share/<group>/<filter>).
    share_group: str = opt("share group", mqtt_share_group, "")
    # A batch is written when it is full, when no message came for a few ms, or after
    # max_batch_delay. Small: with paho-mqtt 1.6 up to one batch is acknowledged to the
    # broker before it is stored (see ravend-mongo-ingest(8)).
    batch_size: int = opt("batch size", integer, 200, low=1, high=10_000)
    max_batch_delay: float = opt("maximum batch delay", duration, 0.25, low=0.001, high=60)
    # Stable across restarts: the broker keeps the persistent session under this id.
    client_id: str = opt("client id", mqtt_client_id, "ravend-mongo-ingest-%h")
    # After a failure of MongoDB or the broker: retry after retry_min, doubling up to
    # retry_max. Unset (None): [device] reconnect_min and reconnect_max, as before these keys.
    retry_min: float | None = opt("minimum retry delay", duration, None, low=0.01, high=3600)
    retry_max: float | None = opt("maximum retry delay", duration, None, low=0.01, high=3600)


@dataclass(frozen=True)
class MetricsConfig:
    """ravend's optional Prometheus endpoint (python3-prometheus-client)."""

    # host:port, e.g. 127.0.0.1:9105 or [::1]:9105; empty: no endpoint. Demand tells whether
    # anyone is at home, and the endpoint has no authentication: keep it on loopback (or behind
    # a firewall or an authenticating proxy).
    listen: str = opt("listen address", listen_address, "")


@dataclass(frozen=True)
class WebConfig:
    """ravend-web: the dashboard and its read-only JSON API (ravend-web(8))."""

    # host:port. Beyond loopback the pages tell who is at home: that takes a password file
    # (auth = auto or basic) or an explicit auth = none.
    listen: str = opt("listen address", web_listen, "127.0.0.1:8080")
    # auto: none on loopback, basic beyond it (and then password_file is required)
    auth: str = opt("authentication", one_of("auto", "none", "basic"), "auto")
    # user:bcrypt-hash lines (htpasswd -B, or python3 -c 'import bcrypt ...'; ravend-web(8))
    password_file: str = opt("password file", text, "")
    store: str = opt("store", one_of("sqlite", "mysql"), "sqlite")
    # Worker threads and open connections: a slow client holds one thread at most.
    threads: int = opt("threads", integer, 8, low=2, high=64)
    connection_limit: int = opt("connection limit", integer, 64, low=4, high=10_000)
    channel_timeout: float = opt("channel timeout", duration, 30.0, low=1, high=3600)
    # Live views (Server-Sent Events) at once: each holds a thread, so fewer than threads.
    max_streams: int = opt("live views", integer, 4, low=1, high=63)


@dataclass(frozen=True)
class TariffConfig:
    """The price of energy, for the cost in the roll-ups, `ravenctl report` and MQTT."""

    # auto: the meter's prices (PriceCluster) where it sent any, the rate or periods below
    # before that and for a meter that sends none (a meter price of 0 counts as none);
    # meter: the meter's prices only; config: the rate or periods below only.
    source: str = opt("price source", one_of("auto", "meter", "config"), "auto")
    # A flat price per kWh, e.g. 0.28. Empty: none.
    rate: Fraction | None = opt("flat rate", optional_price, None)  # noqa: RUF009
    # Time-of-use prices by weekday and local hour (ravend.tariff.parse_periods), e.g.
    # `Mon-Fri 16-21: 0.45; *: 0.28`. Set rate or periods, not both.
    periods: tuple[Rule, ...] = opt("time-of-use periods", tou_periods, ())
    # Of the costs; empty: the meter's (its ISO 4217 code), else none.
    currency: str = opt("currency", currency_code, "")
    # Received (exported) energy is credited at this price per kWh; empty: not credited.
    export_rate: Fraction | None = opt("export rate", optional_price, None)  # noqa: RUF009
    # Of the periods' hours; empty: [retention] time_zone.
    time_zone: str = opt("time zone", optional_time_zone, "")


@dataclass(frozen=True)
class MeterConfig:
    """[meter <MAC>]: settings of one meter; a section for a meter not seen is harmless."""

    # Every demand, summation and period usage of this meter is multiplied by it (a CT meter
    # that reports 1/60 of the usage: 60). Price is not; raw, multiplier, divisor stay as sent.
    scale: Decimal = opt("scale", meter_scale, Decimal(1))  # noqa: RUF009 - a field()


@dataclass(frozen=True)
class RetryPace:
    """The pauses of a retry loop: from minimum, doubling up to maximum (ravend.runtime.backoff)."""

    minimum: float
    maximum: float


#: Where `ravenctl backup` and ravend-backup.service put the copies; mount a USB disk or a NAS
#: share here: a copy on the same SD card does not survive the card.
DEFAULT_BACKUP_DIR = Path("/var/backups/ravend")


@dataclass(frozen=True)
class BackupConfig:
    """`ravenctl backup` of the SQLite store (ravend-backup.timer runs it daily)."""

    dir: Path = opt("backup folder", absolute_path, DEFAULT_BACKUP_DIR)  # noqa: RUF009 - a field()
    # Rotation after each backup: the newest copy of each of the latest keep_daily days that
    # have one, and of each of the latest keep_weekly ISO weeks; the newest is always kept.
    keep_daily: int = opt("daily copies kept", integer, 7, low=1, high=3650)
    keep_weekly: int = opt("weekly copies kept", integer, 4, low=0, high=520)


#: The sections with a retry pace of their own (retry_min, retry_max); [device]'s
#: reconnect_min and reconnect_max stand in for a key they leave unset.
RETRY_SECTIONS = ("service", "repeater", "mongo")


@dataclass(frozen=True)
class Config:
    """The whole file: each section (its defaults where the file has none of it), the
    [meter <MAC>] sections, and where it came from. Each section's readers, beside it:"""

    service: ServiceConfig = field(default_factory=ServiceConfig)  # every program: state, logs
    device: DeviceConfig = field(default_factory=DeviceConfig)  # ravend; ravenctl (stale_after)
    sqlite: SqliteConfig = field(default_factory=SqliteConfig)  # ravend writes, the rest read
    mqtt: MqttConfig = field(default_factory=MqttConfig)  # ravend's sink; the companions' broker
    repeater: RepeaterConfig = field(default_factory=RepeaterConfig)  # ravend-repeater
    mysql: MysqlConfig = field(default_factory=MysqlConfig)  # ravend's sink; the rest may read it
    retention: RetentionConfig = field(default_factory=RetentionConfig)  # maintenance; purge
    mongo: MongoConfig = field(default_factory=MongoConfig)  # ravend-mongo-ingest
    metrics: MetricsConfig = field(default_factory=MetricsConfig)  # ravend's Prometheus endpoint
    tariff: TariffConfig = field(default_factory=TariffConfig)  # roll-ups, report, MQTT costs
    backup: BackupConfig = field(default_factory=BackupConfig)  # ravenctl backup and its timer
    web: WebConfig = field(default_factory=WebConfig)  # ravend-web
    meters: dict[str, MeterConfig] = field(default_factory=dict)  # [meter <MAC>] by MAC
    source: str = "(defaults)"

    @property
    def sqlite_path(self) -> Path:
        return self.service.state_dir / self.sqlite.path

    def retry(self, section: str) -> RetryPace:
        """The retry pace of [device] (reconnect_min, reconnect_max), or of a section of
        RETRY_SECTIONS: its retry_min and retry_max, each, while unset, [device]'s, which set
        the pace of every retry before those keys existed."""
        dev = self.device
        if section == "device":
            return RetryPace(dev.reconnect_min, dev.reconnect_max)
        own = getattr(self, section)
        return RetryPace(dev.reconnect_min if own.retry_min is None else own.retry_min,
                         dev.reconnect_max if own.retry_max is None else own.retry_max)

    @property
    def meter_scales(self) -> dict[str, Decimal]:
        """MAC → scale of the meters whose scale is not 1."""
        return {mac: m.scale for mac, m in self.meters.items() if m.scale != 1}


SECTIONS: dict[str, type] = {
    "service": ServiceConfig,
    "device": DeviceConfig,
    "sqlite": SqliteConfig,
    "mqtt": MqttConfig,
    "repeater": RepeaterConfig,
    "mysql": MysqlConfig,
    "retention": RetentionConfig,
    "mongo": MongoConfig,
    "metrics": MetricsConfig,
    "tariff": TariffConfig,
    "backup": BackupConfig,
    "web": WebConfig,
}
