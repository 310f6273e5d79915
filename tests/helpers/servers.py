"""Private real servers for the tests: MariaDB, Mosquitto and SecantusDB (a MongoDB-wire server).

Each server lives in a directory of its own (data, config, log) and listens on a free loopback
port, so the tests never touch the machine's own MariaDB (3306) or Mosquitto (1883).

Every server object has the same life cycle:

- ``start()`` starts the process and returns once its ports accept TCP connections; it raises
  ``ServerError`` with the end of the log if the process exits or the deadline passes.
- ``stop()`` ends it cleanly (SIGTERM, then SIGKILL after a timeout); ``kill()`` sends SIGKILL
  at once, as a crash would. ``start()`` again reuses the same directory, data and ports.
- ``log_path`` is the file that gets the process's stdout and stderr, kept after the run.

A binary or venv that is not there raises ``MissingDependency``, whose message names the fix;
``tests/conftest.py`` turns both errors into a loud ``pytest.fail``, never a skip.

Every process started here is killed when the test process exits, even by a signal it cannot
catch: each child gets PR_SET_PDEATHSIG, so it dies with the thread that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

# Debian puts the daemons in sbin, which a non-root PATH may lack.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# How much of a log a failure message quotes.
_LOG_TAIL_LINES = 60

# A unix socket path longer than this does not fit in sockaddr_un (108 bytes with the NUL).
_MAX_UNIX_SOCKET_PATH = 107


class MissingDependency(RuntimeError):
    """A program or venv the tests need is not installed; the message says how to install it."""


class ServerError(RuntimeError):
    """A server did not start, stop or answer as it should; the message quotes its log."""


# --------------------------------------------------------------------------------------------
# helpers


def find_binary(name: str, package: str) -> str:
    """Return the path of the program NAME, looking in PATH and the system's sbin directories."""
    search = os.pathsep.join([os.environ.get("PATH", ""), _SYSTEM_PATH])
    found = shutil.which(name, path=search)
    if found is None:
        raise MissingDependency(
            f"{name} is not installed: the tests start a private server with it. "
            f"Fix: run `make deps` (it installs the Debian package {package}), "
            f"or `apt-get install {package}`."
        )
    return found


_ports_given: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on HOST that nothing listens on now and that this process has not handed out."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise ServerError(f"no free TCP port found on {host}")


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to HOST:PORT succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last LINES lines of the log at PATH, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


def run_checked(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a short command; raise ServerError with its output if it fails."""
    proc = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, **kwargs
    )
    if proc.returncode != 0:
        raise ServerError(
            f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n"
            f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
        )
    return proc


# --------------------------------------------------------------------------------------------
# process bookkeeping: every child dies with us

_live: set[subprocess.Popen] = set()
_PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - no libc symbols; the atexit hook still runs
    _libc = None


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the thread that started it ends."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(argv: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None):
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C at the terminal reaches pytest (which then tears down),
            # not the servers in the middle of a test.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    _live.add(proc)
    return proc


def _reap(proc: subprocess.Popen, sig: int, timeout: float) -> bool:
    """Send SIG and wait up to TIMEOUT; SIGKILL if it is still there. True if SIG was enough."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            _live.discard(proc)
            return False
    _live.discard(proc)
    return True


def kill_all() -> None:
    """SIGKILL every server process still running (session end, Ctrl-C, interpreter exit)."""
    for proc in list(_live):
        _reap(proc, signal.SIGKILL, 10)


atexit.register(kill_all)


# --------------------------------------------------------------------------------------------
# the common life cycle


class Server:
    """A server process with a directory of its own and fixed ports; see the module docstring."""

    kind = "server"
    host = LOOPBACK
    start_timeout = 30.0
    stop_timeout = 30.0

    def __init__(self, base_dir: str | os.PathLike, port: int | None = None) -> None:
        self.dir = Path(base_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.log_path = self.dir / f"{self.kind}.log"
        self._proc: subprocess.Popen | None = None

    # subclasses fill in these
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _ports(self) -> list[int]:
        return [self.port]

    def _before_start(self) -> None:
        """One-time preparation (data directory, config files); runs before every start."""

    def _after_start(self) -> None:
        """Runs once the ports accept connections."""

    # the life cycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    def start(self) -> Server:
        if self.running:
            raise ServerError(f"{self!r} is already running")
        self._before_start()
        self._proc = _spawn(self._argv(), self.log_path, self.dir, self._env())
        try:
            self._wait_ready()
            self._after_start()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Clean shutdown (SIGTERM); SIGKILL if it takes longer than TIMEOUT seconds."""
        if self._proc is None:
            return
        clean = _reap(self._proc, signal.SIGTERM, timeout or self.stop_timeout)
        self._proc = None
        if not clean:
            raise ServerError(
                f"{self.kind} did not stop within {timeout or self.stop_timeout} s of SIGTERM "
                f"and was killed; log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown work is done."""
        if self._proc is not None:
            _reap(self._proc, signal.SIGKILL, 10)
            self._proc = None

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        for port in self._ports():
            while not port_accepts(self.host, port, timeout=0.5):
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise ServerError(
                        f"{self.kind} exited with status {self._proc.returncode} before "
                        f"accepting connections on {self.host}:{port}; "
                        f"log {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"{self.kind} did not accept connections on {self.host}:{port} within "
                        f"{self.start_timeout} s; log {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.02)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.kill()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} dir={self.dir}>"


# --------------------------------------------------------------------------------------------
# MariaDB


class MariaDBServer(Server):
    """A private mariadbd with real authentication.

    Attributes: ``host``, ``port``, ``unix_socket``, ``user``/``password`` (the application
    account, all privileges), ``database`` (created empty), ``root_user``/``root_password``,
    ``datadir``. ``connect_kwargs()`` gives keyword arguments for ``MySQLdb.connect``;
    ``new_database(name)`` creates and returns a fresh database; ``sql(statement)`` runs SQL as
    root through the ``mariadb`` client and returns its tab-separated output.
    """

    kind = "mariadb"
    start_timeout = 90.0
    stop_timeout = 60.0

    user = "ravend"
    password = "ravend-test"
    database = "ravend"
    root_user = "root"
    root_password = "root-test"

    def __init__(
        self, base_dir: str | os.PathLike, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        super().__init__(base_dir, port)
        self.datadir = self.dir / "data"
        self.unix_socket = str(self.dir / "mysqld.sock")
        self.extra_args = list(extra_args)
        self._initialized_marker = self.dir / "initialized"
        self._names = itertools.count(1)
        if len(self.unix_socket) > _MAX_UNIX_SOCKET_PATH:
            raise ServerError(
                f"unix socket path too long for sockaddr_un ({len(self.unix_socket)} bytes): "
                f"{self.unix_socket}; use a shorter --basetemp"
            )
        self._mariadbd = find_binary("mariadbd", "mariadb-server")
        self._install_db = find_binary("mariadb-install-db", "mariadb-server")
        self._client = find_binary("mariadb", "mariadb-client")

    def _common_args(self) -> list[str]:
        # --no-defaults must come first: no /etc/mysql config may reach the private instance.
        args = ["--no-defaults", f"--datadir={self.datadir}"]
        if os.geteuid() == 0:
            # mariadbd refuses to run as root unless told to; install-db chowns to this user.
            args.append("--user=root")
        return args

    def _server_settings(self) -> list[str]:
        return [
            "--innodb-log-file-size=16M",  # default 96M of redo log per instance
            "--innodb-buffer-pool-size=64M",
            "--character-set-server=utf8mb4",  # as Debian's packaged config
            "--collation-server=utf8mb4_general_ci",
            "--skip-name-resolve",  # no DNS look-ups (there is no network)
        ]

    def _before_start(self) -> None:
        if (self.datadir / "mysql").is_dir():
            return
        # normal: root@localhost starts without a password; _after_start sets one at once.
        run_checked(
            [
                self._install_db,
                *self._common_args(),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._server_settings(),
            ],
            "mariadb-install-db",
            cwd=self.dir,
        )

    def _argv(self) -> list[str]:
        return [
            self._mariadbd,
            *self._common_args(),
            f"--socket={self.unix_socket}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.dir / 'mariadbd.pid'}",
            f"--tmpdir={self.dir}",
            *self._server_settings(),
            *self.extra_args,
        ]

    def _after_start(self) -> None:
        if self._initialized_marker.exists():
            return
        # First start: root has no password yet. Create the application account and database,
        # then give every root account the root password.
        local = ("localhost", "127.0.0.1", "::1")
        statements = [
            # install-db also makes root@<this host's name>, which --skip-name-resolve ignores
            # (and so cannot ALTER): drop it rather than leave a root without a password.
            "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN "
            f"({', '.join(repr(h) for h in local)})",
            "FLUSH PRIVILEGES",
            f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4",
            *(
                f"CREATE USER '{self.user}'@'{host}' IDENTIFIED BY '{self.password}'"
                for host in ("%", "localhost")
            ),
            *(
                f"GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'{host}'"
                for host in ("%", "localhost")
            ),
            *(
                f"ALTER USER IF EXISTS '{self.root_user}'@'{host}' "
                f"IDENTIFIED BY '{self.root_password}'"
                for host in local
            ),
        ]
        self._client_run(";\n".join(statements), password="")
        self._initialized_marker.write_text("ravend test accounts created\n")

    def _client_run(self, statement: str, password: str, database: str | None = None) -> str:
        argv = [
            self._client,
            "--no-defaults",
            "--protocol=socket",
            f"--socket={self.unix_socket}",
            f"--user={self.root_user}",
            "--batch",
            "--skip-column-names",
        ]
        if password:
            argv.append(f"--password={password}")
        if database:
            argv.append(f"--database={database}")
        return run_checked([*argv, "-e", statement], "mariadb client").stdout

    def sql(self, statement: str, database: str | None = None) -> str:
        """Run STATEMENT(s) as root over the unix socket; the tab-separated rows, no header."""
        return self._client_run(statement, self.root_password, database)

    def new_database(self, name: str = "ravend_test") -> str:
        """Create an empty database named after NAME, unique on this server; return its name."""
        base = re.sub(r"\W", "_", name)[:48]
        db = f"{base}_{next(self._names)}"
        self.sql(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        return db

    def connect_kwargs(self, database: str | None = None, *, root: bool = False) -> dict:
        """Keyword arguments for ``MySQLdb.connect`` over TCP (mysqlclient 1.4 and 2.x)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.root_user if root else self.user,
            "password": self.root_password if root else self.password,
            "database": database or self.database,
        }


# --------------------------------------------------------------------------------------------
# TLS material for test listeners


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate signed by it (PEM files)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def make_test_certificates(
    directory: str | os.PathLike,
    hostnames: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = (LOOPBACK,),
) -> TlsFiles:
    """Make a CA and a server certificate for HOSTNAMES and IPS in DIRECTORY with openssl."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    openssl = find_binary("openssl", "openssl")
    certs = TlsFiles(d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key")
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run_checked(
        [
            openssl, "req", "-x509", *ec_key, "-days", "7",
            "-keyout", str(certs.ca_key), "-out", str(certs.ca_cert),
            "-subj", "/CN=ravend test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        "openssl (test CA)",
    )  # fmt: skip
    csr = d / "server.csr"
    run_checked(
        [
            openssl, "req", "-new", *ec_key,
            "-keyout", str(certs.server_key), "-out", str(csr), "-subj", f"/CN={hostnames[0]}",
        ],
        "openssl (server key)",
    )  # fmt: skip
    san = ",".join([*(f"DNS:{h}" for h in hostnames), *(f"IP:{ip}" for ip in ips)])
    ext = d / "server.ext"
    ext.write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    run_checked(
        [
            openssl, "x509", "-req", "-in", str(csr), "-days", "7",
            "-CA", str(certs.ca_cert), "-CAkey", str(certs.ca_key), "-CAcreateserial",
            "-extfile", str(ext), "-out", str(certs.server_cert),
        ],
        "openssl (server certificate)",
    )  # fmt: skip
    return certs


# --------------------------------------------------------------------------------------------
# Mosquitto


class MosquittoServer(Server):
    """A private mosquitto broker with persistence in its directory.

    Options: ``users`` ({name: password}, written with mosquitto_passwd; anonymous clients are
    then refused unless ``allow_anonymous=True``), ``tls=True`` (a second listener on
    ``tls_port`` with a server certificate for localhost/127.0.0.1 signed by the CA in
    ``ca_cert``), ``extra_config`` (lines appended to mosquitto.conf).
    Attributes: ``host``, ``port``, ``tls_port``, ``ca_cert``, ``certificates``, ``users``,
    ``config_path``, ``password_file``, ``persistence_dir``.
    """

    kind = "mosquitto"
    start_timeout = 20.0

    def __init__(
        self,
        base_dir: str | os.PathLike,
        *,
        users: dict[str, str] | None = None,
        allow_anonymous: bool | None = None,
        tls: bool = False,
        port: int | None = None,
        tls_port: int | None = None,
        extra_config: str = "",
    ) -> None:
        super().__init__(base_dir, port)
        self._mosquitto = find_binary("mosquitto", "mosquitto")
        self.users = dict(users or {})
        self.allow_anonymous = not self.users if allow_anonymous is None else allow_anonymous
        self.tls_port = (tls_port or free_port()) if tls else None
        self.extra_config = extra_config
        self.config_path = self.dir / "mosquitto.conf"
        self.persistence_dir = self.dir / "persistence"
        self.password_file = self.dir / "passwd" if self.users else None
        self.certificates = make_test_certificates(self.dir / "tls") if tls else None
        self.ca_cert = str(self.certificates.ca_cert) if self.certificates else None
        self._write_files()

    def _write_files(self) -> None:
        self.persistence_dir.mkdir(exist_ok=True)
        if self.password_file is not None:
            passwd = find_binary("mosquitto_passwd", "mosquitto")
            self.password_file.unlink(missing_ok=True)
            for i, (name, password) in enumerate(self.users.items()):
                create = ["-c"] if i == 0 else []
                run_checked(
                    [passwd, *create, "-b", str(self.password_file), name, password],
                    "mosquitto_passwd",
                )
        lines = [
            "# written by tests/helpers/servers.py",
            # As root, mosquitto would switch to the user 'mosquitto', who cannot read the
            # 0700 pytest temp directories.
            *(["user root"] if os.geteuid() == 0 else []),
            "log_dest stderr",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
        ]
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        lines.append(f"listener {self.port} {self.host}")
        if self.certificates is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.certificates.ca_cert}",
                f"certfile {self.certificates.server_cert}",
                f"keyfile {self.certificates.server_key}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")

    def _argv(self) -> list[str]:
        return [self._mosquitto, "-c", str(self.config_path)]

    def _ports(self) -> list[int]:
        """Every listener in the config, extra_config's too: mosquitto opens them one by one,
        so a test that used a listener of its own before it accepted saw "connection refused"
        (the CI failure of stop 15)."""
        found = re.findall(r"(?m)^listener\s+(\d+)", self.config_path.read_text())
        return [int(port) for port in found]


# --------------------------------------------------------------------------------------------
# SecantusDB (MongoDB wire protocol)

SECANTUS_VENV = REPO_ROOT / ".venv-secantus"


def secantus_python() -> str:
    """The interpreter of the venv that has SecantusDB (override: RAVEND_SECANTUS_PYTHON)."""
    python = os.environ.get("RAVEND_SECANTUS_PYTHON") or str(SECANTUS_VENV / "bin" / "python")
    if not os.access(python, os.X_OK):
        raise MissingDependency(
            f"SecantusDB's venv is missing ({python} not found): the MongoDB tests start a "
            "private SecantusDB server from it. Fix: run `make deps` (it creates .venv-secantus "
            "with `pip install --pre secantusdb`)."
        )
    return python


class SecantusServer(Server):
    """A private SecantusDB server speaking the MongoDB wire protocol.

    It advertises itself as the primary of a one-node replica set named ``secantus`` with its
    real host:port, so pymongo 3 and 4 both connect with the plain ``uri``. Readiness: it logs
    ``secantus listening on HOST:PORT`` and accepts TCP connections. SIGTERM stops it cleanly
    (about 2 s). Writes are not fsynced on commit unless ``sync_on_commit=True`` (as mongod with
    j:false): after ``kill()`` the last acknowledged writes may be gone, as on a crash.
    Attributes: ``host``, ``port``, ``uri``, ``storage_path``.
    """

    kind = "secantus"
    start_timeout = 60.0

    def __init__(
        self,
        base_dir: str | os.PathLike,
        *,
        port: int | None = None,
        sync_on_commit: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(base_dir, port)
        self._python = secantus_python()
        self.storage_path = self.dir / "data"
        self.sync_on_commit = sync_on_commit
        self.extra_args = list(extra_args)
        # An explicit (empty) config turns off the search for ./secantusd.toml, ~/.secantus/...
        self._config = self.dir / "secantusd.toml"
        self._config.write_text("# empty: every setting comes from the command line\n")

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    def _argv(self) -> list[str]:
        return [
            self._python, "-m", "secantus",
            "--config", str(self._config),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.storage_path),
            *(["--sync-on-commit"] if self.sync_on_commit else []),
            *self.extra_args,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONUNBUFFERED"] = "1"
        return env
