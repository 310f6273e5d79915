"""``ravenctl doctor``: why is ravend not logging? One line per possible fault, with its fix.

Each check is a small function returning a ``Check``, so that each can be tried alone against a
deliberately broken setup. ``run`` orders them as ravend depends on them: a valid configuration
first (nothing else can be judged without it), then a device the service user may open and
that nobody else holds, then stores to write to, the backlog waiting for them and room on disk;
last, when a ravend runs, whether each of its parts is up.
Nothing here changes anything: the port is opened only when no process is seen holding it, and
stores are opened read-only or merely connected to.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import shutil
import socket
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ravend import doctor_sinks
from ravend.config import Config, ConfigError, DeviceConfig, load, replace
from ravend.db.sqlite import readonly_uri
from ravend.device import DeviceNotFound, find_port
from ravend.doctor_check import Check, Status
from ravend.plural import plural
from ravend.ttyinfo import Identity, exclusive_open, holders, identify, running_ravend

#: The group of the sticks' tty nodes (udev/60-ravend.rules), for a port with no node to look at.
TTY_GROUP = "dialout"
#: Below this much free space SQLite and the outboxes soon cannot commit: FAIL.
DISK_FAIL_BYTES = 10 * 10**6
#: Below this much, or this share of the file system, WARN.
DISK_WARN_BYTES = 100 * 10**6
DISK_WARN_PERCENT = 5.0
#: Longest wait for a network check, in seconds.
TIMEOUT = 3.0
#: Older than this, the newest verified backup of the SQLite store is worth a WARN: the daily
#: timer has missed a run and its retry.
BACKUP_WARN_AGE = 2 * 86400.0


# --- the service user ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A user as the kernel will see the service: its uid and every group systemd gives it."""

    name: str
    uid: int
    gids: frozenset[int]

    def may(self, st: os.stat_result, bits: int) -> bool:
        """Whether the mode allows ``bits`` (0o6 read+write, 0o3 write+search) to this user;
        as the kernel decides: only the owner's bits for the owner, the group's for a member."""
        if self.uid == 0:
            return True
        if st.st_uid == self.uid:
            return (st.st_mode >> 6) & bits == bits
        if st.st_gid in self.gids:
            return (st.st_mode >> 3) & bits == bits
        return st.st_mode & bits == bits

    def may_write_dir(self, path: Path) -> bool:
        try:
            return self.may(path.stat(), 0o3)
        except OSError:
            return False


@dataclass(frozen=True)
class Accounts:
    """User and group lookups; a test passes its own to ask about a user that is not in a group."""

    getpwnam: Callable[[str], Any] = pwd.getpwnam
    getgrgid: Callable[[int], Any] = grp.getgrgid
    getgrnam: Callable[[str], Any] = grp.getgrnam
    grouplist: Callable[[str, int], list[int]] = os.getgrouplist

    def account(self, user: str) -> Account | None:
        try:
            pw = self.getpwnam(user)
        except KeyError:
            return None
        # What initgroups() gives a unit with User=: the primary group and every membership.
        return Account(user, pw.pw_uid, frozenset(self.grouplist(user, pw.pw_gid)))

    def group_name(self, gid: int) -> str:
        try:
            return str(self.getgrgid(gid).gr_name)
        except KeyError:
            return str(gid)


# --- the checks -------------------------------------------------------------------------------


def check_config(path: str) -> tuple[Check, Config | None]:
    try:
        config = load(path)
    except ConfigError as exc:
        return Check("config", Status.FAIL, str(exc), "correct it, then: ravend --check-config"
                     ), None
    if not os.path.exists(path):
        return Check("config", Status.WARN, f"{path} does not exist: ravend runs on the defaults",
                     "create it (see ravend.conf(5)) or pass --config"), config
    stores = ", ".join(n for n in ("sqlite", "mysql", "mqtt") if getattr(config, n).enabled)
    return Check("config", Status.OK, f"{path} is valid (port = {config.device.port};"
                 f" stores: {stores or 'none'})"), config


def check_device(device: DeviceConfig, *, dev: str | None = None, sys_root: str = "/sys"
                 ) -> tuple[Check, Identity | None]:
    """Where the stick is and what it is; the Identity (None for a network port or no stick)
    lets the port and user checks look at the node itself."""
    port = device.port
    if port == "auto":
        try:
            port, _ = find_port(dev) if dev else find_port()  # as ravend looks: $RAVEND_DEV_DIR
        except DeviceNotFound as exc:
            return Check("device", Status.FAIL,
                         str(exc).removesuffix("; is the stick plugged in?"),
                         "plug in the stick, or set [device] port"), None
    if "://" in port:
        scheme = urlsplit(port).scheme
        if scheme == "spy" and urlsplit(port).path:
            return check_device(dataclasses.replace(device, port=urlsplit(port).path), dev=dev,
                                sys_root=sys_root)
        return _check_network(port), None
    if not os.path.exists(port):
        dangling = " (a link to nothing)" if os.path.islink(port) else ""
        return Check("device", Status.FAIL, f"{port} not found{dangling}",
                     "plug in the stick or set [device] port"), None
    if not stat.S_ISCHR(os.stat(port).st_mode):
        return Check("device", Status.FAIL, f"{port} is not a serial device",
                     "set [device] port to the stick's tty (/dev/raven, /dev/ttyUSB0) or auto"
                     ), None
    ident = identify(port, sys_root=sys_root, dev=dev or "/dev")
    wanted = {"raven": "RAVEn", "emu2": "EMU-2"}.get(device.model)
    if ident.kind == "usb" and not ident.model:
        return Check("device", Status.WARN, ident.describe(),
                     "is [device] port the stick? `port = auto` finds it"), ident
    if wanted and ident.model and ident.model != wanted:
        return Check("device", Status.WARN, f"{ident.describe()}; [device] model = "
                     f"{device.model}", "set [device] model = auto"), ident
    return Check("device", Status.OK, ident.describe()), ident


def _check_network(port: str) -> Check:
    parts = urlsplit(port)
    if parts.scheme not in ("socket", "rfc2217"):
        return Check("device", Status.WARN, f"{port}: a pyserial URL this check does not try")
    try:
        host, tcp_port = parts.hostname, parts.port
    except ValueError:
        host, tcp_port = None, None
    if not host or not tcp_port:
        return Check("device", Status.FAIL, f"{port}: no host:port in it",
                     "set [device] port = socket://HOST:PORT")
    try:
        socket.create_connection((host, tcp_port), timeout=TIMEOUT).close()
    except OSError as exc:
        return Check("device", Status.FAIL, f"{port}: cannot connect: {exc.strerror or exc}",
                     f"is ser2net running on {host} and exporting the stick on {tcp_port}?")
    return Check("device", Status.OK, f"{port} accepts connections (a stick on the network)")


def check_port(ident: Identity, *, proc: str = "/proc") -> Check:
    """Nobody but ravend may hold the tty: ModemManager's AT probes or a second logger would
    read (and write) half of the stick's bytes."""
    node = ident.node
    found, complete = holders(node, proc=proc, exclude=frozenset({os.getpid()}))
    others = [h for h in found if not h.is_ravend]
    if others:
        if any(h.comm == "ModemManager" for h in others):
            fix = ("replug the stick so that ravend's udev rule keeps ModemManager away, or"
                   " systemctl stop ModemManager")
        else:
            fix = "stop it: only one program may read the stick (ravend shares it over MQTT)"
        return Check("port", Status.FAIL, f"{node} is held by {', '.join(map(str, others))}",
                     fix)
    if found:
        pids = ", ".join(str(h.pid) for h in found)
        return Check("port", Status.OK, f"{node} is held by ravend (pid {pids}) and no one else")
    why = exclusive_open(node)
    if why is None:
        return Check("port", Status.OK, f"{node} opens exclusively: nothing else holds it")
    if "lock" in why or "busy" in why:
        ravends = [h for h in running_ravend(proc=proc) if h.pid != os.getpid()]
        if not complete and ravends:
            return Check("port", Status.WARN, f"{node} is {why}, probably the running ravend"
                         f" (pid {', '.join(str(h.pid) for h in ravends)})",
                         "run ravenctl doctor as root to see every process")
        return Check("port", Status.FAIL, f"{node} is {why}"
                     + ("" if complete else " that this user cannot see"),
                     f"run as root to name it (fuser -v {node}), then stop it")
    return Check("port", Status.WARN, f"cannot open {node} here: {why}",
                 "run ravenctl doctor as root (the user line says whether ravend may)")


def check_user(user: str, node: str | None, accounts: Accounts = Accounts(), *,
               needs_tty: bool = True) -> Check:
    """The service user must exist and be let in by the node's mode, which for a stick means
    membership in the group udev gives it (dialout)."""
    account = accounts.account(user)
    if account is None:
        return Check("user", Status.FAIL, f"no user {user!r} on this system",
                     "reinstall ravend (it creates the user), or name it with --user")
    if not needs_tty:
        return Check("user", Status.OK, f"{user} exists; a network port needs no tty group")
    if node is None:
        try:
            gid = int(accounts.getgrnam(TTY_GROUP).gr_gid)
        except KeyError:
            return Check("user", Status.WARN, f"there is no group {TTY_GROUP}",
                         "the udev rules give the stick to it: groupadd --system dialout")
        if account.uid == 0:
            return Check("user", Status.OK, f"{user} may open any tty (root)")
        if gid in account.gids:
            return Check("user", Status.OK, f"{user} is in group {TTY_GROUP}")
        return Check("user", Status.FAIL, f"{user} is not in group {TTY_GROUP}, which the"
                     " stick's tty will belong to", f"adduser {user} {TTY_GROUP}")
    st = os.stat(node)
    group = accounts.group_name(st.st_gid)
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    if account.may(st, 0o6):
        how = ("as root" if account.uid == 0 else "its owner" if st.st_uid == account.uid
               else f"a member of its group {group}" if st.st_gid in account.gids
               else f"mode {mode}: anyone may")
        return Check("user", Status.OK, f"{user} may open {node} ({how})")
    if st.st_gid in account.gids or st.st_uid == account.uid:
        return Check("user", Status.FAIL, f"{node} is mode {mode}: {user} cannot read and write"
                     " it", "the udev rules set GROUP=dialout MODE=0660: udevadm trigger, or"
                     " replug the stick")
    if st.st_gid == 0:  # never the fix: root's group opens far more than a tty
        return Check("user", Status.FAIL, f"{node} belongs to group root: {user} may not open"
                     " it", f"the udev rules give a stick group {TTY_GROUP}: udevadm trigger,"
                     " or replug the stick")
    return Check("user", Status.FAIL, f"{user} is not in group {group}, which owns {node}",
                 f"adduser {user} {group}, then systemctl restart ravend")


def _spooled(path: Path) -> int:
    conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=TIMEOUT)
    try:
        return int(conn.execute("SELECT COALESCE(SUM(n), 0) FROM outbox").fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        conn.close()


def check_spool(state_dir: Path, enabled: set[str]) -> Check:
    """Readings waiting in the outboxes (state_dir/outbox-<store>.db) for a store that was
    down: a few after a blip are normal; a growing number means a store is still down."""
    waiting: list[str] = []
    names: list[str] = []
    for path in sorted(state_dir.glob("outbox-*.db")):
        sink = path.stem.removeprefix("outbox-")
        names.append(sink)
        try:
            n = _spooled(path)
        except sqlite3.Error as exc:
            return Check("spool", Status.WARN, f"cannot read {path}: {exc}",
                         "run ravenctl doctor as root")
        if n:
            off = "" if sink in enabled else " (no longer enabled)"
            waiting.append(f"{n} for {sink}{off}")
    if waiting:
        return Check("spool", Status.WARN, f"readings waiting: {', '.join(waiting)}",
                     "they are sent in order once the store is reachable (see its sink line);"
                     " a store no longer enabled gets them only if enabled again")
    if not names:
        return Check("spool", Status.OK, f"no outbox in {state_dir}: nothing waiting")
    return Check("spool", Status.OK, f"nothing waiting (outbox of {', '.join(names)})")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_disk(state_dir: Path, usage: Callable[[Path], Any] = shutil.disk_usage) -> Check:
    where = state_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    u = usage(where)
    percent = 100.0 * u.free / u.total if u.total else 0.0
    message = (f"{_size(u.free)} free of {_size(u.total)} ({percent:.0f}%) on the file system"
               f" of {state_dir}")
    fix = ("free space, or store less: [retention] raw_days, max_db_mb; ravend cannot commit"
           " readings on a full disk")
    if u.free < DISK_FAIL_BYTES:
        return Check("disk", Status.FAIL, message, fix)
    if u.free < DISK_WARN_BYTES or percent < DISK_WARN_PERCENT:
        return Check("disk", Status.WARN, message, fix)
    return Check("disk", Status.OK, message)


def check_backup(folder: Path, now: float | None = None) -> Check:
    """A verified backup of the SQLite store newer than two days in [backup] dir: only
    verified copies get a backup's name there (ravend.backup), so the names are enough."""
    import time

    from ravend.backup_archive import backups, taken_at

    fix = ("ravenctl backup (or: systemctl enable --now ravend-backup.timer); mount a USB disk"
           f" or a NAS share on {folder}")
    try:
        found = backups(folder)
    except OSError as exc:
        return Check("backup", Status.WARN, f"cannot look into {folder}: {exc.strerror or exc}",
                     "run ravenctl doctor as root")
    if not found:
        return Check("backup", Status.WARN, f"no verified backup in {folder}", fix)
    newest = found[-1]
    when = taken_at(newest)
    assert when is not None
    age = (time.time() if now is None else now) - when.timestamp()
    message = f"newest verified backup {newest} ({age / 3600:.0f} h old)"
    if age > BACKUP_WARN_AGE:
        return Check("backup", Status.WARN, message, fix)
    return Check("backup", Status.OK, message)


# --- all of them ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to examine; the paths are parameters so that tests can point them elsewhere."""

    config: str
    user: str = "ravend"
    db: Path | None = None
    state_dir: Path | None = None
    accounts: Accounts = field(default_factory=Accounts)
    dev: str | None = None  # where `port = auto` looks; None: as ravend does
    sys_root: str = "/sys"
    proc: str = "/proc"


def run(opts: Options) -> list[Check]:
    first, config = check_config(opts.config)
    if config is None:
        # The user check needs no configuration: say it too rather than hide a second fault.
        return [first, check_user(opts.user, None, opts.accounts)]
    if opts.state_dir is not None:
        config = replace(config, service={"state_dir": opts.state_dir.resolve()})
    checks = [first]
    device, ident = check_device(config.device, dev=opts.dev, sys_root=opts.sys_root)
    checks.append(device)
    if ident is not None:
        checks.append(check_port(ident, proc=opts.proc))
    port = config.device.port
    network = "://" in port and urlsplit(port).scheme != "spy"
    checks.append(check_user(opts.user, ident.node if ident else None, opts.accounts,
                             needs_tty=not network))
    account = opts.accounts.account(opts.user)
    may_write = account.may_write_dir if account else (lambda p: os.access(p, os.W_OK))
    enabled = {n for n in ("sqlite", "mysql", "mqtt") if getattr(config, n).enabled}
    if not enabled:
        checks.append(Check("sinks", Status.FAIL, "no store is enabled",
                            "enable [sqlite], [mysql] or [mqtt]"))
    if config.sqlite.enabled:
        checks.append(doctor_sinks.check_sqlite(opts.db or config.sqlite_path, may_write,
                                                opts.user))
        checks.append(check_backup(config.backup.dir))
    if config.mysql.enabled:
        checks.append(doctor_sinks.check_mysql(config.mysql))
    if config.mqtt.enabled:
        checks.append(doctor_sinks.check_mqtt(config.mqtt))
    checks.append(check_spool(config.service.state_dir, enabled))
    checks.append(check_disk(config.service.state_dir))
    from ravend.doctor_web import check_web

    web = check_web(config)
    if web is not None:
        checks.append(web)
    service = check_service(config)
    if service is not None:
        checks.append(service)
    return checks


def check_service(config: Config) -> Check | None:
    """The running ravend's parts (its supervisor's view); None when no ravend runs here."""
    from ravend.health import describe, query

    health = query(config)
    if not health.running:
        return None
    who = f"ravend (pid {health.pid})" if health.pid else "ravend"
    if not health.answered:
        return Check("service", Status.FAIL, f"{who} runs, but its control socket does not"
                     f" answer: {health.error}",
                     "see its log (journalctl -u ravend); restart it: systemctl restart ravend")
    down = health.down()
    if not down:
        return Check("service", Status.OK, f"{who}: all {plural(len(health.parts), 'part')} up")
    return Check("service", Status.FAIL, f"{who}: part down: "
                 + "; ".join(describe(p) for p in down),
                 "see its log for the traceback (journalctl -u ravend); ravend restarts the"
                 " part by itself, and systemd restarts ravend when it cannot stay up")


def failed(checks: list[Check]) -> bool:
    return any(c.status is Status.FAIL for c in checks)
