"""The Debian package on this machine: built, linted, installed, exercised, upgraded, purged.

`make check-deb` runs this as root on Debian's python3 with RAVEND_PACKAGE_TEST=1; the other
test targets leave tests/package out (--ignore=tests/package). It changes the machine: it
installs the package with apt-get, creates the ravend user, and removes both again at the end,
whatever happened.

The tests run in file order on one installation and build on each other: build → lintian →
contents → install → user, files, units, udev rules, man pages, the installed ravend as its
user on a simulated stick → the units under a real systemd (this machine booted in a
container) → upgrade to a second build → remove → purge → the postinst's adduser fallback.
Run the module whole.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.bash_completion import offered

if os.environ.get("RAVEND_PACKAGE_TEST") != "1":
    pytest.fail(
        "tests/package installs and purges the ravend package on this machine: run it with"
        " `make check-deb` (RAVEND_PACKAGE_TEST=1); `make test-debian` and `make test-pypi`"
        " must pass --ignore=tests/package",
        pytrace=False,
    )

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out"
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
#: Everything these tests start gets this environment: Debian's PATH and none of this run's
#: Python settings (with PYTHONPATH the installed ravend would import the source tree).
CLEAN_ENV = {"PATH": DEBIAN_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root",
             "DEBIAN_FRONTEND": "noninteractive"}
#: The second build, the "new version" of the upgrade test.
UPGRADE_SUFFIX = "+pkgtest1"

CONF = Path("/etc/ravend/ravend.conf")
STATE = Path("/var/lib/ravend")
DB = STATE / "ravend.db"
UNIT_DIR = Path("/lib/systemd/system")
RULES = Path("/lib/udev/rules.d/60-ravend.rules")
DOC = Path("/usr/share/doc/ravend")
COMPLETION = Path("/usr/share/bash-completion/completions/ravenctl")
#: The line the postinst prints on a first install, and what deb-systemd-invoke would print
#: for each unit it was asked to start while disabled.
NEXT_STEP = "ravend: plug the stick in"
NOT_STARTING = "disabled or a static unit"
#: Exposure limits of `systemd-analyze security` (0 best, 10 worst) per unit.
EXPOSURE_LIMITS = {"ravend.service": 2.0, "ravend-repeater.service": 2.5,
                   "ravend-mongo-ingest.service": 2.5, "ravend-backup.service": 1.0,
                   "ravend-web.service": 1.5}
#: Units that are not services: verified, but systemd-analyze security does not rate them.
TIMERS = ("ravend-backup.timer",)
BACKUPS = Path("/var/backups/ravend")
#: The programs of the companion units. While one is not in the package yet (it comes with a
#: later version), `systemd-analyze verify` may report its ExecStart program missing, and only
#: that. Once the package ships the program, its unit must verify clean like ravend.service.
COMPANION_PROGRAMS = {"ravend-repeater.service": "/usr/bin/ravend-repeater",
                      "ravend-mongo-ingest.service": "/usr/bin/ravend-mongo-ingest",
                      "ravend-web.service": "/usr/bin/ravend-web"}


def run(cmd: list[str], *, check: bool = True, timeout: float = 300, env: dict | None = None,
        **kw) -> subprocess.CompletedProcess:
    """Run with the clean environment, no stdin (a prompt fails), output captured as text."""
    proc = subprocess.run(cmd, env=env or CLEAN_ENV, stdin=subprocess.DEVNULL, text=True,
                          capture_output=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        pytest.fail(f"{shlex.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
                    f"\n--- stderr\n{proc.stderr}", pytrace=False)
    return proc


def apt_get(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "-y", *args], env=env)


def package_status() -> str:
    """'installed', 'config-files', or '' when dpkg knows nothing of ravend."""
    proc = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "ravend"], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def installed_version() -> str:
    return run(["dpkg-query", "-W", "-f=${Version}", "ravend"]).stdout.strip()


def user_exists(name: str = "ravend") -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def delete_user() -> None:
    if user_exists():
        run(["userdel", "ravend"])
    with_group = run(["getent", "group", "ravend"], check=False)
    if with_group.returncode == 0:
        run(["groupdel", "ravend"])


def purge() -> None:
    if package_status():
        apt_get("purge", "ravend")


def as_user(user: str, *cmd: str) -> list[str]:
    """cmd as `user` with its groups, no new privileges and no capabilities, as User= does."""
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
            "--no-new-privs", "--inh-caps=-all", "--", *cmd]


def owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
            stat.S_IMODE(st.st_mode))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def exec_start(unit: Path) -> list[str]:
    lines = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1, f"{unit}: expected one ExecStart=, found {lines}"
    return shlex.split(lines[0].removeprefix("ExecStart="))


# ---------------------------------------------------------------------------------------------
# the machine, the builds, the installation


@pytest.fixture(scope="module")
def machine():
    """Root, no ravend package or user before (leftovers of an interrupted run are removed),
    and none after: the package is purged and the user deleted at the end, whatever happened."""
    if os.geteuid() != 0:
        pytest.fail("the package tests install packages: run `make check-deb` as root",
                    pytrace=False)
    purge()
    delete_user()
    try:
        yield
    finally:
        purge()
        delete_user()
        for leftover in (CONF.parent, STATE):
            assert not leftover.exists(), f"{leftover} is left after the purge"


@dataclass(frozen=True)
class Builds:
    version: str
    deb: Path
    changes: Path
    upgrade_version: str
    upgrade_deb: Path


@pytest.fixture(scope="module")
def builds(machine, tmp_path_factory, report):
    """This tree's package in out/, and the same with a higher version for the upgrade test
    (built side by side)."""
    first = (ROOT / "debian/changelog").read_text().splitlines()[0]
    version = re.match(r"ravend \(([^)]+)\)", first)[1]
    upgrade_version = version + UPGRADE_SUFFIX
    upgrade_out = tmp_path_factory.mktemp("upgrade")
    script = str(ROOT / "tools/package-build.sh")
    started = time.monotonic()
    procs = [subprocess.Popen(["bash", script, *args], env=CLEAN_ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for args in (["--out", str(OUT)],
                          ["--out", str(upgrade_out), "--version", upgrade_version])]
    for proc in procs:
        output = proc.communicate(timeout=600)[0]
        if proc.returncode != 0:
            pytest.fail(f"tools/package-build.sh failed:\n{output}", pytrace=False)
    report(f"build: two packages in {time.monotonic() - started:.0f} s")
    changes = sorted(OUT.glob(f"ravend_{version}_*.changes"))
    assert len(changes) == 1, changes
    return Builds(version, OUT / f"ravend_{version}_all.deb", changes[0], upgrade_version,
                  upgrade_out / f"ravend_{upgrade_version}_all.deb")


@pytest.fixture(scope="module")
def installed(builds):
    """The package installed the way a user installs it; later tests upgrade and remove it."""
    apt_get("install", str(builds.deb))
    assert package_status() == "installed"
    assert installed_version() == builds.version


# ---------------------------------------------------------------------------------------------
# the build


def test_build_leaves_the_deb_and_a_plain_copy_in_out(builds):
    assert builds.deb.is_file() and builds.upgrade_deb.is_file()
    assert (OUT / "ravend.deb").read_bytes() == builds.deb.read_bytes()


def test_lintian_finds_no_error_and_no_warning(builds, tmp_path, report):
    # As nobody: lintian warns when run as root. Info and pedantic tags are shown, not failed.
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, pwd.getpwnam("nobody").pw_uid, -1)
    env = {**CLEAN_ENV, "HOME": str(home)}
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
           "lintian", "--fail-on", "error,warning", "--display-info", "--pedantic",
           str(builds.changes)]
    proc = run(cmd, check=False, env=env)
    tags = [ln for ln in proc.stdout.splitlines() if re.match(r"[EWIPX]: ", ln)]
    bad = [t for t in tags if t[0] in "EW"]
    assert proc.returncode == 0 and not bad, (
        f"lintian exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    others = sorted({t.split()[2] for t in tags})
    report(f"lintian --fail-on error,warning: 0 errors, 0 warnings; info/pedantic: {others}")


def test_package_holds_programs_units_rules_manpages_and_migrations(builds):
    listing = run(["dpkg-deb", "-c", str(builds.deb)]).stdout
    paths = {line.split()[5].removeprefix(".") for line in listing.splitlines()}
    site = "/usr/lib/python3/dist-packages/ravend"
    wanted = {
        "/usr/bin/ravend", "/usr/bin/ravenctl", "/etc/ravend/ravend.conf",
        "/lib/systemd/system/ravend.service", "/lib/systemd/system/ravend-repeater.service",
        "/lib/systemd/system/ravend-mongo-ingest.service", str(RULES),
        "/lib/systemd/system/ravend-backup.service", "/lib/systemd/system/ravend-backup.timer",
        "/usr/lib/sysusers.d/ravend.conf", "/usr/lib/tmpfiles.d/ravend.conf",
        "/usr/share/man/man8/ravend.8.gz", "/usr/share/man/man1/ravenctl.1.gz",
        "/usr/share/man/man5/ravend.conf.5.gz", "/usr/share/man/man8/ravend-repeater.8.gz",
        "/usr/share/man/man8/ravend-mongo-ingest.8.gz", "/usr/bin/ravend-repeater",
        "/usr/bin/ravend-mongo-ingest", str(COMPLETION), "/usr/bin/ravend-web",
        "/lib/systemd/system/ravend-web.service", "/usr/share/man/man8/ravend-web.8.gz",
        f"{site}/web/app.py", f"{site}/web/static/index.html", f"{site}/web/static/app.js",
        f"{site}/web/static/style.css",
        f"{DOC}/copyright", f"{DOC}/changelog.gz", f"{DOC}/README.md.gz", f"{DOC}/NEWS.Debian.gz",
        f"{DOC}/mqtt.md.gz", f"{DOC}/sql.md.gz", f"{DOC}/packaging.md.gz",
        f"{site}/__init__.py", f"{site}/cli/ravend.py",
    }
    # Every SQL migration of the tree, shipped as the package ravend.sql (setup.py package_dir).
    wanted |= {f"{site}/sql/{p.relative_to(ROOT / 'sql')}" for p in (ROOT / "sql").rglob("*.sql")}
    missing = sorted(wanted - paths)
    assert not missing, f"not in the package: {missing}"
    control = run(["dpkg-deb", "-f", str(builds.deb)]).stdout
    assert "Architecture: all" in control
    depends = re.search(r"^Depends: (.*)$", control, re.M)[1]
    for name in ("python3-serial", "python3-sdnotify", "python3-daemon"):
        assert name in depends
    conffiles = run(["dpkg-deb", "--info", str(builds.deb), "conffiles"]).stdout.split()
    assert conffiles == [str(CONF)]


# ---------------------------------------------------------------------------------------------
# the installed package


def test_service_user_is_a_dialout_member_without_login(installed):
    user = pwd.getpwnam("ravend")
    assert user.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin")
    assert user.pw_dir == str(STATE)
    assert user.pw_uid < 1000, "a system user"
    assert grp.getgrgid(user.pw_gid).gr_name == "ravend"
    groups = run(["id", "-Gn", "ravend"]).stdout.split()
    assert "dialout" in groups, groups


def test_config_is_root_ravend_0640_and_state_dir_belongs_to_ravend(installed):
    assert owner(CONF) == ("root", "ravend", 0o640)
    override = run(["dpkg-statoverride", "--list", str(CONF)]).stdout.split()
    assert override[:2] == ["root", "ravend"] and int(override[2], 8) == 0o640, override
    assert owner(STATE) == ("ravend", "ravend", 0o750)
    assert owner(BACKUPS) == ("ravend", "ravend", 0o750)  # tmpfiles.d, for the backup unit
    # The service user reads it; others do not: ravend refuses with EX_CONFIG.
    ok = run(as_user("ravend", "/usr/bin/ravend", "--check-config", "--config", str(CONF)))
    assert "configuration OK" in ok.stdout
    denied = run(as_user("nobody", "/usr/bin/ravend", "--check-config"), check=False)
    assert denied.returncode == 78 and "permission denied" in denied.stderr


def test_installed_programs_run_from_the_installed_package(installed, builds):
    programs = [p for p in run(["dpkg", "-L", "ravend"]).stdout.split()
                if p.startswith("/usr/bin/")]
    assert {"/usr/bin/ravend", "/usr/bin/ravenctl"} <= set(programs), programs
    for program in programs:
        assert Path(program).read_text().startswith("#!/usr/bin/python3\n"), program
        version = run([program, "--version"]).stdout.strip()
        assert version == f"{Path(program).name} {builds.version}"
    # The migrations load from the installed package (ravend.sql), not from a source tree.
    code = ("import ravend, ravend.db.migrations as m; print(ravend.__file__);"
            " print(len(m.migrations('sqlite')))")
    out = run(["/usr/bin/python3", "-c", code], cwd="/").stdout.split()
    assert out[0] == "/usr/lib/python3/dist-packages/ravend/__init__.py"
    assert int(out[1]) == len(list((ROOT / "sql/sqlite").glob("[0-9]*.sql")))


def test_shipped_documents_are_the_tree_s_and_every_reference_to_one_resolves(installed):
    # README and the documents of doc/, as in the tree; NEWS.Debian with this version's entry.
    # (dh_compress leaves a document under 4 kB as it is: either form is the tree's.)
    for source in [ROOT / "README.md", *sorted((ROOT / "doc").glob("*.md"))]:
        packed = DOC / f"{source.name}.gz"
        shipped = (run(["zcat", str(packed)]).stdout if packed.exists()
                   else (DOC / source.name).read_text(encoding="utf-8"))
        assert shipped == source.read_text(encoding="utf-8"), f"{DOC / source.name} is not {source}"
    news = run(["zcat", str(DOC / "NEWS.Debian.gz")]).stdout
    assert news.startswith(f"ravend ({installed_version()}) "), news[:200]
    # Every /usr/share/doc/ravend/... that the configuration file, a man page or a unit names.
    texts = {str(CONF): CONF.read_text()}
    for path in run(["dpkg", "-L", "ravend"]).stdout.split():
        if path.startswith("/usr/share/man/") and path.endswith(".gz"):
            texts[path] = run(["zcat", path]).stdout
        elif path.startswith(str(UNIT_DIR)) and path.endswith(".service"):
            texts[path] = Path(path).read_text()
    named = {(where, ref.rstrip(".,;:)"))
             for where, text in texts.items()
             for ref in re.findall(r"/usr/share/doc/ravend/[\w./-]*", text.replace("\\", ""))}
    assert any(ref.endswith("mqtt.md.gz") for _, ref in named), named
    missing = sorted((where, ref) for where, ref in named if not Path(ref).exists())
    assert not missing, f"named but not installed: {missing}"


def test_installed_bash_completion_offers_the_commands_and_their_options(installed):
    commands = offered(["ravenctl", ""], script=COMPLETION)
    for command in ("status", "info", "tail", "export", "device", "report", "doctor",
                    "simulate"):
        assert command in commands, commands
    assert offered(["ravenctl", "device", ""], script=COMPLETION) == ["info", "restart"]
    assert "--json" in offered(["ravenctl", "status", "--"], script=COMPLETION)
    # bash-completion loads it by the command's name, at the first TAB after "ravenctl".
    loader = Path("/usr/share/bash-completion/bash_completion")
    if loader.exists():
        proc = run(["bash", "--norc", "--noprofile", "-c",
                    f"source {loader}; __load_completion ravenctl && complete -p ravenctl"])
        assert "_ravenctl" in proc.stdout, proc.stdout


@pytest.mark.parametrize("unit", sorted([*EXPOSURE_LIMITS, *TIMERS]))
def test_unit_verifies_without_a_word(installed, unit):
    # systemd-analyze verify only warns (exit 0) about bad directives: any output fails.
    proc = run(["systemd-analyze", "verify", "--man=no", str(UNIT_DIR / unit)], check=False)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    program = COMPANION_PROGRAMS.get(unit)
    if program and not Path(program).exists():
        # Not shipped yet (see COMPANION_PROGRAMS): that, and only that, may be reported.
        lines = [ln for ln in lines if program not in ln]
    assert not lines, f"systemd-analyze verify {unit}:\n" + "\n".join(lines)


def test_unit_documentation_pages_are_installed(installed):
    for unit in [*EXPOSURE_LIMITS, *TIMERS]:
        text = (UNIT_DIR / unit).read_text()
        for page in re.findall(r"man:([\w.-]+)\((\d)\)", text):
            if unit in COMPANION_PROGRAMS and not Path(COMPANION_PROGRAMS[unit]).exists():
                continue
            assert run(["man", "-w", page[1], page[0]], check=False).returncode == 0, (
                f"{unit}: Documentation=man:{page[0]}({page[1]}) is not installed")


@pytest.mark.parametrize("unit", sorted(EXPOSURE_LIMITS))
def test_unit_exposure_is_within_its_limit(installed, unit, report):
    limit = EXPOSURE_LIMITS[unit]
    proc = run(["systemd-analyze", "security", "--offline=true", f"--threshold={limit * 10:.0f}",
                str(UNIT_DIR / unit)], check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    exposure = float(match[1])
    report(f"systemd-analyze security --offline=true {unit}: {exposure:.1f} (limit {limit})")
    assert exposure <= limit and proc.returncode == 0, proc.stdout


def test_man_pages_render_without_warnings(installed):
    pages = run(["dpkg", "-L", "ravend"]).stdout.split()
    pages = [p for p in pages if p.startswith("/usr/share/man/") and p.endswith(".gz")]
    assert len(pages) >= 3, pages
    for page in pages:
        proc = run(["man", "--warnings", "-l", page], env={**CLEAN_ENV, "MANWIDTH": "80"})
        assert proc.stdout.strip() and not proc.stderr.strip(), f"{page}:\n{proc.stderr}"


# --- udev rules, on fake sticks (umockdev) in a private mount namespace ----------------------


@dataclass(frozen=True)
class FakeStick:
    kernel: str
    vendor: str
    product_id: str
    manufacturer: str | None
    product: str | None
    serial: str | None
    #: "raven" or "emu2" when the rules must match it, None when they must leave it alone.
    expect: str | None

    def umockdev(self) -> str:
        """The sysfs tree of the tty, as `umockdev-record` writes it."""
        usb = "/devices/pci0000:00/0000:00:14.0/usb1/1-2"
        intf = f"{usb}/1-2:1.0"
        if self.kernel.startswith("ttyUSB"):  # FTDI: tty under a usb-serial port device
            major, driver, klass = 188, "ftdi_sio", "ff"
            tty = f"{intf}/{self.kernel}/tty/{self.kernel}"
            port = [f"P: {intf}/{self.kernel}", f"E: DRIVER={driver}", "E: SUBSYSTEM=usb-serial",
                    "A: port_number=0\\n", ""]
        else:  # cdc_acm: tty right under the interface
            major, driver, klass = 166, "cdc_acm", "02"
            tty = f"{intf}/tty/{self.kernel}"
            port = []
        strings = [f"A: {key}={value}\\n" for key, value in
                   (("manufacturer", self.manufacturer), ("product", self.product),
                    ("serial", self.serial)) if value is not None]
        return "\n".join([
            f"P: {tty}", f"N: {self.kernel}", f"E: DEVNAME=/dev/{self.kernel}",
            f"E: MAJOR={major}", "E: MINOR=0", "E: SUBSYSTEM=tty", f"A: dev={major}:0\\n", "",
            *port,
            f"P: {intf}", "E: DEVTYPE=usb_interface", f"E: DRIVER={driver}", "E: SUBSYSTEM=usb",
            f"A: bInterfaceClass={klass}\\n", "A: bInterfaceNumber=00\\n", "",
            f"P: {usb}", "N: bus/usb/001/002", "E: DEVNAME=/dev/bus/usb/001/002",
            "E: DEVTYPE=usb_device", "E: DRIVER=usb", "E: SUBSYSTEM=usb", "E: MAJOR=189",
            "E: MINOR=1", f"A: idVendor={self.vendor}\\n", f"A: idProduct={self.product_id}\\n",
            *strings, "A: busnum=1\\n", "A: devnum=2\\n", "A: dev=189:1\\n", "",
            # The root hub has a serial (its PCI address) too: the rules must not take it.
            "P: /devices/pci0000:00/0000:00:14.0/usb1", "E: DEVTYPE=usb_device",
            "E: DRIVER=usb", "E: SUBSYSTEM=usb", "A: idVendor=1d6b\\n", "A: idProduct=0002\\n",
            "A: serial=0000:00:14.0\\n", "A: busnum=1\\n", "A: devnum=1\\n", "",
        ])


FAKE_STICKS = {
    "raven": FakeStick("ttyUSB0", "0403", "8a28", "Rainforest",
                       "RFA-Z106-RA-PC RAVEn v2.3.21", "0001A2B3", "raven"),
    "raven-without-serial": FakeStick("ttyUSB0", "0403", "8a28", "Rainforest",
                                      "RFA-Z106-RA-PC RAVEn v2.3.21", None, "raven"),
    "emu2": FakeStick("ttyACM0", "04b4", "0003", "Rainforest Automation, Inc.", "EMU-2",
                      "00F0C2", "emu2"),
    "generic-ftdi-0403-6001": FakeStick("ttyUSB0", "0403", "6001", "FTDI", "FT232R USB UART",
                                        "A50285BI", None),
    "generic-cypress-04b4-0003": FakeStick("ttyACM0", "04b4", "0003", "Cypress Semiconductor",
                                           "USB-Serial (Single Channel)", "1234", None),
}

# Run in a private mount namespace: `udevadm test` really creates the /dev links and
# /run/udev data, here on an overlay over /dev and a tmpfs on /run that vanish with it.
UDEV_NAMESPACE_SCRIPT = """\
set -e
mount -t tmpfs tmpfs /run
mount -t overlay overlay -o "lowerdir=/dev,upperdir=$1/upper,workdir=$1/work" /dev
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
exec umockdev-run -d "$1/stick.umockdev" -- udevadm test --action=add "/sys/class/tty/$2"
"""


@pytest.mark.parametrize("name", FAKE_STICKS)
def test_udev_rules_on_a_fake_stick(installed, name, tmp_path):
    stick = FAKE_STICKS[name]
    (tmp_path / "upper").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "stick.umockdev").write_text(stick.umockdev())
    host_links_before = sorted(Path("/dev").glob("raven*")) + sorted(Path("/dev").glob("emu2*"))
    proc = run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                UDEV_NAMESPACE_SCRIPT, "sh", str(tmp_path), stick.kernel], timeout=60)
    output = proc.stdout + proc.stderr
    ours = [ln for ln in output.splitlines() if "60-ravend.rules" in ln]
    errors = [ln for ln in ours if re.search(r"invalid|unknown|error|fail|ignor", ln, re.I)]
    assert any("Reading rules file" in ln for ln in ours), f"rules not read:\n{output}"
    assert not errors, "\n".join(errors)
    props = dict(ln.split("=", 1) for ln in output.splitlines()
                 if re.match(r"[A-Z][A-Z0-9_]*=", ln))
    links = props.get("DEVLINKS", "").split()
    wants = props.get("SYSTEMD_WANTS", "").split()
    ours_applied = [ln for ln in ours if "Reading rules file" not in ln]
    if stick.expect is None:
        assert not ours_applied, "\n".join(ours_applied)
        assert not [link for link in links if link.startswith(("/dev/raven", "/dev/emu2"))]
        assert "ravend.service" not in wants
        assert "ID_MM_DEVICE_IGNORE" not in props
    else:
        dialout = grp.getgrnam("dialout").gr_gid
        assert any(re.search(rf"60-ravend.rules:\d+ GROUP {dialout}$", ln) for ln in ours)
        assert any(re.search(r"60-ravend.rules:\d+ MODE 0660$", ln) for ln in ours)
        assert props.get("RAVEND_STICK") == stick.expect
        assert "/dev/raven" in links
        assert ("/dev/emu2" in links) == (stick.expect == "emu2")
        per_serial = [link for link in links if link.startswith("/dev/raven-")]
        assert per_serial == ([f"/dev/raven-{stick.serial}"] if stick.serial else []), links
        assert props.get("ID_MM_DEVICE_IGNORE") == "1"
        assert "systemd" in props.get("TAGS", "").split(":")
        assert "ravend.service" in wants
    host_links_after = sorted(Path("/dev").glob("raven*")) + sorted(Path("/dev").glob("emu2*"))
    assert host_links_after == host_links_before, "udevadm test changed the host's /dev"


# --- the installed ravend, as its user, on a simulated stick ---------------------------------


@pytest.fixture
def simulated_stick():
    """A simulated RAVEn on a pty behind a link that the ravend user can reach; the pty gets
    group dialout and mode 0660, as the udev rules give a real stick."""
    from ravend.simulator import MeterSimulator  # the source tree's (PYTHONPATH)

    folder = Path(tempfile.mkdtemp(prefix="ravend-pkgtest-"))
    folder.chmod(0o755)
    sim = MeterSimulator("raven", link=str(folder / "raven"), speed=50).start()
    try:
        os.chown(sim.slave_name, 0, grp.getgrnam("dialout").gr_gid)
        os.chmod(sim.slave_name, 0o660)
        yield sim
    finally:
        sim.stop()
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()


def stored(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT meter_mac, kind FROM readings").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()


def test_installed_ravend_logs_a_stick_as_its_user(installed, simulated_stick, tmp_path, report):
    # An admin's edit of the conffile: the stick's port (kept by the upgrade test below).
    text = CONF.read_text()
    assert "\n#port = auto\n" in text
    CONF.write_text(text.replace("\n#port = auto\n", f"\nport = {simulated_stick.port}\n"))
    # The unit's own command line, as the unit's user with the unit's umask, with a private
    # /run/ravend as systemd would make it (RuntimeDirectory=ravend, mode 0750): a mount
    # namespace with a tmpfs on /run, so that nothing else on this machine meets it.
    argv = exec_start(UNIT_DIR / "ravend.service")
    runtime = ("mount -t tmpfs -o mode=0755 tmpfs /run"
               " && install -d -o ravend -g ravend -m 0750 /run/ravend && exec \"$@\"")
    log_path = tmp_path / "ravend.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", runtime, "sh",
             *as_user("ravend", *argv)],
            env=CLEAN_ENV, cwd="/", stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(0o027))
    try:
        deadline = time.monotonic() + 30
        rows: list[tuple] = []
        while time.monotonic() < deadline and proc.poll() is None:
            rows = stored(DB)
            if len(rows) >= 5 and any(kind == "demand" for _, kind in rows):
                break
            time.sleep(0.2)
        control = run(["nsenter", f"--target={proc.pid}", "--mount", "stat", "-c", "%U %G %a %F",
                       "/run/ravend/control"], check=False)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    log_text = log_path.read_text()
    assert control.stdout.strip() == "ravend ravend 660 socket", control.stdout + control.stderr
    assert code == 0, f"ravend exited {code}:\n{log_text}"
    rows = stored(DB)
    assert len(rows) >= 5, f"{len(rows)} readings stored:\n{log_text}"
    assert {mac for mac, _ in rows} <= set(simulated_stick.meter_macs)
    assert f"device opened on {simulated_stick.port}" in log_text
    assert owner(DB)[:2] == ("ravend", "ravend")
    report(f"installed ravend as user ravend: {len(rows)} readings stored in {DB}")
    # ravenctl reads them as the service user: fresh readings → exit 0.
    status = run(as_user("ravend", "/usr/bin/ravenctl", "status"), check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert simulated_stick.meter_macs[0] in status.stdout


def test_autopkgtest_script_passes_as_an_ordinary_user(installed):
    # debian/tests/simulate as autopkgtest runs it (no needs-root): the installed simulator,
    # ravend and ravenctl, in a scratch folder of the user's.
    scratch = Path(tempfile.mkdtemp(prefix="ravend-autopkgtest-"))
    try:
        os.chown(scratch, pwd.getpwnam("nobody").pw_uid, -1)
        env = {**CLEAN_ENV, "AUTOPKGTEST_TMP": str(scratch), "HOME": str(scratch)}
        proc = run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                    "sh", str(ROOT / "debian/tests/simulate")], env=env, check=False,
                   timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        shutil.rmtree(scratch)


# --- the units under a real systemd: this machine booted in a container ---------------------
#
# systemd is not PID 1 here. systemd-nspawn boots this machine's own root, read-only under a
# tmpfs overlay (the installed package included; nothing written there reaches the host), to
# basic.target, so that none of the host's other services start. Not enforced in the container
# (cgroup v1): DeviceAllow= (the simulated stick is a pty, not a ttyUSB) and IPAddressDeny=.

NSPAWN_SCRIPT = """\
mount --bind / "$1"
exec systemd-nspawn -D "$1" --volatile=overlay --register=no --keep-unit --private-network \
    --quiet -b systemd.unit=basic.target
"""
SIM_LINK = "/run/ravend-sim/raven"


class Container:
    def __init__(self, pid1: int) -> None:
        self.pid1 = pid1

    def run(self, *cmd: str, check: bool = True, timeout: float = 60):
        return run(["nsenter", f"--target={self.pid1}", "--all", *cmd], check=check,
                   timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
            time.sleep(0.25)


@pytest.fixture(scope="module")
def container(installed, tmp_path_factory, report):
    root = Path(tempfile.mkdtemp(prefix="ravend-nspawn-"))
    log_path = tmp_path_factory.mktemp("nspawn") / "console.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        nspawn = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                   NSPAWN_SCRIPT, "sh", str(root)], env=CLEAN_ENV,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    box = None
    try:
        deadline = time.monotonic() + 60
        while box is None and time.monotonic() < deadline and nspawn.poll() is None:
            found = run(["pgrep", "-P", str(nspawn.pid), "-x", "systemd"], check=False)
            if found.returncode == 0:
                box = Container(int(found.stdout.split()[0]))
            else:
                time.sleep(0.1)
        if box is None:
            pytest.fail(f"the container did not start:\n{log_path.read_text()}", pytrace=False)
        # Until the container's systemd listens, systemctl says nothing; then --wait waits
        # for the boot to finish.
        state = ""
        while not state and time.monotonic() < deadline:
            state = box.run("systemctl", "is-system-running", "--wait",
                            check=False).stdout.strip()
            time.sleep(0.1)
        assert state in ("running", "degraded"), f"container: {state}\n{log_path.read_text()}"
        report(f"container (systemd-nspawn, basic.target) up in {time.monotonic() - started:.1f} s")
        yield box
    finally:
        if box is not None:
            # -ff: at once, without stopping the units one by one (the overlay is thrown away).
            box.run("systemctl", "poweroff", "-ff", check=False)
        try:
            nspawn.wait(30)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()
        root.rmdir()


@pytest.fixture(scope="module")
def ravend_unit(container):
    """ravend.service in the container, logging a simulated stick that runs there too."""
    container.run("systemd-run", "--unit=ravend-sim", "--quiet", "--property=RuntimeDirectory="
                  "ravend-sim", "/usr/bin/ravenctl", "simulate", "--link", SIM_LINK,
                  "--speed", "50")
    container.wait_for(lambda: container.run("test", "-L", SIM_LINK, check=False).returncode
                       == 0, 20, "the simulator's link")
    # The group and mode the udev rules give a stick.
    container.run("sh", "-c", f'pty=$(readlink -f {SIM_LINK}) && chgrp dialout "$pty"'
                  ' && chmod 0660 "$pty"')
    container.run("sed", "-i", "-e", f"s|^port = .*|port = {SIM_LINK}|",
                  "-e", f"s|^#port = auto|port = {SIM_LINK}|", str(CONF))
    return container


def readings_in_status(box: Container) -> int:
    text = box.show("ravend.service", "StatusText")["StatusText"]
    match = re.match(r"(\d+) readings?\b", text)
    return int(match[1]) if match else 0


def test_unit_starts_ravend_ready_sandboxed_and_logging(ravend_unit, report):
    box = ravend_unit
    # Type=notify: `systemctl start` returns once ravend has sent READY=1.
    box.run("systemctl", "start", "ravend.service")
    box.wait_for(lambda: readings_in_status(box) >= 5, 30, "5 readings in STATUS=")
    props = box.show("ravend.service", "ActiveState", "SubState", "MainPID", "StatusText")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    pid = props["MainPID"]
    ids = box.run("ps", "-o", "user=,group=", "-p", pid).stdout.split()
    assert ids == ["ravend", "ravend"], ids
    groups = box.run("sh", "-c", f"grep ^Groups: /proc/{pid}/status").stdout.split()[1:]
    assert str(grp.getgrnam("dialout").gr_gid) in groups, groups
    control = box.run("stat", "-c", "%U %G %a %F", "/run/ravend/control").stdout.strip()
    assert control == "ravend ravend 660 socket"
    runtime = box.run("stat", "-c", "%U %G %a", "/run/ravend").stdout.strip()
    assert runtime == "ravend ravend 750"
    # ProtectSystem=strict: the system is read-only in the service's mount namespace, even to
    # root. systemd mounts ConfigurationDirectory= writable, but it is root's: the service's
    # user cannot write there.
    nsenter = ["nsenter", f"--target={pid}", "--mount", "--"]
    for path in ("/usr/lib/written-by-ravend", "/etc/written-by-ravend"):
        probe = box.run(*nsenter, "touch", path, check=False)
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe.stderr
    probe = box.run(*nsenter, *as_user("ravend", "touch", "/etc/ravend/written-by-ravend"),
                    check=False)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr, probe.stderr
    report(f"under systemd: ravend.service ready, {props['StatusText']!r}")


def test_unit_reload_reopens_the_port(ravend_unit):
    box = ravend_unit
    box.run("systemctl", "reload", "ravend.service")
    box.wait_for(lambda: "SIGHUP: reopening the device port" in box.journal("ravend.service"),
                 10, "the SIGHUP line in the journal")
    box.wait_for(lambda: box.journal("ravend.service").count("device opened on")
                 + box.journal("ravend.service").count("device back on") >= 2, 20,
                 "the port reopened")
    assert box.show("ravend.service", "ActiveState")["ActiveState"] == "active"


METRICS_URL = "http://127.0.0.1:{port}/metrics"


def with_metrics_listen(box: Container, listen: str) -> None:
    """The conffile's [metrics] listen line (shipped commented out) set to ``listen``."""
    box.run("sed", "-i", rf"/^\[metrics\]/,/^\[/ s|^#\?listen =.*|listen = {listen}|",
            str(CONF))
    assert f"\nlisten = {listen}\n" in box.run("cat", str(CONF)).stdout


def answers_metrics(box: Container, port: int) -> bool:
    got = box.run("curl", "-sf", "--max-time", "2", METRICS_URL.format(port=port), check=False)
    return got.returncode == 0 and "ravend_readings_received_total" in got.stdout


def test_unit_reload_applies_a_changed_config_in_place(ravend_unit, report):
    """`systemctl reload ravend` with a changed file: the unit's ExecReload checks it, ravend
    restarts in place (the same MainPID, which systemd keeps as the service's), and the new
    [metrics] listen answers."""
    box = ravend_unit
    good = box.run("cat", str(CONF)).stdout
    box.run("systemctl", "restart", "ravend.service")
    try:
        before = box.show("ravend.service", "MainPID")["MainPID"]
        assert not answers_metrics(box, 9105)
        with_metrics_listen(box, "127.0.0.1:9105")
        box.run("systemctl", "reload", "ravend.service")
        box.wait_for(lambda: answers_metrics(box, 9105), 30, "the new [metrics] listen")
        props = box.show("ravend.service", "MainPID", "ActiveState", "NRestarts")
        assert props == {"MainPID": before, "ActiveState": "active", "NRestarts": "0"}, props
        assert "changed ([metrics]); restarting in place" in box.journal("ravend.service")
        stored = readings_in_status(box)
        box.wait_for(lambda: readings_in_status(box) > stored, 30, "readings after the reload")
        report("under systemd: a changed [metrics] listen applied on reload, same MainPID")
    finally:
        box.run("sh", "-c", 'printf "%s" "$1" > "$2"', "sh", good, str(CONF))


def test_unit_reload_refuses_a_bad_config_and_runs_on(ravend_unit, report):
    """A bad file: `systemctl reload ravend` fails, the journal names the key, and ravend runs
    on as it was (its MainPID, its [metrics] listen, its readings); no SIGHUP reached it."""
    box = ravend_unit
    good = box.run("cat", str(CONF)).stdout
    try:
        with_metrics_listen(box, "127.0.0.1:9106")
        box.run("systemctl", "restart", "ravend.service")
        box.wait_for(lambda: answers_metrics(box, 9106), 30, "[metrics] listen at the start")
        before = box.show("ravend.service", "MainPID")["MainPID"]
        hups = box.journal("ravend.service").count("SIGHUP:")
        with_metrics_listen(box, "nowhere")
        reload = box.run("systemctl", "reload", "ravend.service", check=False)
        assert reload.returncode != 0, reload
        journal = box.journal("ravend.service")
        assert "[metrics] listen = 'nowhere'" in journal, journal[-3000:]
        props = box.show("ravend.service", "MainPID", "ActiveState", "NRestarts")
        assert props == {"MainPID": before, "ActiveState": "active", "NRestarts": "0"}, props
        assert journal.count("SIGHUP:") == hups  # the check failed: no signal was sent
        assert answers_metrics(box, 9106)
        stored = readings_in_status(box)
        box.wait_for(lambda: readings_in_status(box) > stored, 30, "readings after the refusal")
        report("under systemd: a bad file refused on reload, naming [metrics] listen;"
               " ravend runs on")
    finally:
        box.run("sh", "-c", 'printf "%s" "$1" > "$2"', "sh", good, str(CONF))


def test_unit_watchdog_restarts_a_hung_ravend(ravend_unit):
    box = ravend_unit
    dropin = "/run/systemd/system/ravend.service.d/watchdog.conf"
    box.run("sh", "-c", f"mkdir -p {Path(dropin).parent} && printf '[Service]\\nWatchdogSec=2s\\n"
            f"RestartSec=1s\\n' > {dropin} && systemctl daemon-reload")
    try:
        box.run("systemctl", "restart", "ravend.service")
        before = box.show("ravend.service", "MainPID", "NRestarts")
        time.sleep(5)  # more than two watchdog periods: ravend's own pings keep it alive
        alive = box.show("ravend.service", "MainPID", "NRestarts", "ActiveState")
        assert alive["MainPID"] == before["MainPID"] and alive["ActiveState"] == "active", alive
        box.run("kill", "-STOP", before["MainPID"])
        box.wait_for(lambda: int(box.show("ravend.service", "NRestarts")["NRestarts"])
                     > int(before["NRestarts"]), 20, "the watchdog to restart ravend")
        assert "Watchdog timeout" in box.journal("ravend.service")
        box.wait_for(lambda: box.show("ravend.service", "ActiveState")["ActiveState"]
                     == "active", 20, "ravend active again")
    finally:
        box.run("sh", "-c", f"rm -f {dropin} && systemctl daemon-reload")


def test_unit_stops_cleanly_and_does_not_restart_on_a_bad_config(ravend_unit):
    box = ravend_unit
    box.run("systemctl", "restart", "ravend.service")
    box.run("systemctl", "stop", "ravend.service")
    props = box.show("ravend.service", "Result", "ExecMainStatus")
    assert props == {"Result": "success", "ExecMainStatus": "0"}, props
    good = box.run("cat", str(CONF)).stdout
    box.run("sh", "-c", f"printf '[nosuch]\\n' >> {CONF}")
    try:
        start = box.run("systemctl", "start", "ravend.service", check=False)
        assert start.returncode != 0
        time.sleep(7)  # past RestartSec=5s: a restart would have happened by now
        props = box.show("ravend.service", "Result", "ExecMainStatus", "NRestarts",
                         "ActiveState")
        assert props["ExecMainStatus"] == "78" and props["ActiveState"] == "failed", props
        assert props["NRestarts"] == "0", props
        assert "unknown section" in box.journal("ravend.service")
    finally:
        box.run("sh", "-c", 'printf "%s" "$1" > "$2"', "sh", good, str(CONF))
        box.run("systemctl", "reset-failed", "ravend.service")


def test_unconfigured_companions_refuse_to_start_and_are_not_restarted(ravend_unit, report):
    box = ravend_unit
    for unit, section in (("ravend-repeater.service", "repeater"),
                          ("ravend-mongo-ingest.service", "mongo")):
        try:
            assert box.run("systemctl", "start", unit, check=False).returncode != 0
            time.sleep(7)  # past RestartSec=5s: a restart would have happened by now
            props = box.show(unit, "ExecMainStatus", "ActiveState", "NRestarts")
            assert props == {"ExecMainStatus": "78", "ActiveState": "failed",
                             "NRestarts": "0"}, (unit, props)
            assert f"set [{section}] enabled = yes in {CONF}" in box.journal(unit), unit
        finally:
            box.run("systemctl", "reset-failed", unit, check=False)
    report("under systemd: unconfigured companions exit 78 once, naming [...] enabled = yes")


def test_repeater_unit_publishes_the_store_to_mqtt(ravend_unit, report):
    box = ravend_unit
    box.run("systemctl", "start", "mosquitto.service", "ravend.service")
    # The shipped file's [repeater] enabled line, switched on (the broker is the local one).
    box.run("sed", "-i", r"/^\[repeater\]/,/^\[/ s|^#enabled = no|enabled = yes|", str(CONF))
    box.run("systemctl", "start", "ravend-repeater.service")
    try:
        got = box.run("mosquitto_sub", "-t", "ravend/+/demand", "-C", "3", "-W", "30", "-v",
                      timeout=40).stdout.splitlines()
        assert len(got) == 3 and all(" " in line for line in got), got
        props = box.show("ravend-repeater.service", "ActiveState", "NRestarts")
        assert props == {"ActiveState": "active", "NRestarts": "0"}, props
        watermark = box.run("stat", "-c", "%U %a", str(STATE / "repeater.watermark"))
        assert watermark.stdout.strip() == "ravend 640"
        report(f"under systemd: ravend-repeater.service published demand to MQTT ({got[0]})")
    finally:
        box.run("systemctl", "stop", "ravend-repeater.service", "ravend.service", check=False)


def test_backup_timer_is_enabled_and_its_service_leaves_a_verified_backup(ravend_unit, report):
    """ravend-backup.service, as the timer starts it, while ravend writes: a backup appears in
    /var/backups/ravend, belongs to ravend, and verifies (ravenctl restore --check)."""
    box = ravend_unit
    timer = box.show("ravend-backup.timer", "UnitFileState", "ActiveState", "TimersCalendar")
    assert timer["UnitFileState"] == "enabled", timer
    assert timer["ActiveState"] == "active", timer
    assert "OnCalendar=*-*-* 00:00:00" in timer["TimersCalendar"], timer  # daily
    box.run("systemctl", "start", "ravend.service")
    try:
        box.wait_for(lambda: readings_in_status(box) >= 5, 30, "5 readings in STATUS=")
        # Type=oneshot: `systemctl start` returns when the backup is done (or failed).
        started = box.run("systemctl", "start", "ravend-backup.service", check=False,
                          timeout=180)
        journal = box.journal("ravend-backup.service")
        assert started.returncode == 0, started.stdout + started.stderr + journal
        result = box.show("ravend-backup.service", "Result", "ExecMainStatus")
        assert result == {"Result": "success", "ExecMainStatus": "0"}, (result, journal)
    finally:
        box.run("systemctl", "stop", "ravend.service", check=False)
    found = box.run("sh", "-c", f"ls {BACKUPS}/ravend-*.tar.gz").stdout.split()
    assert len(found) == 1, found
    assert ": verified;" in journal, journal
    ids = box.run("stat", "-c", "%U %G %a", found[0]).stdout.strip()
    assert ids == "ravend ravend 640", ids
    check = box.run(*as_user("ravend", "/usr/bin/ravenctl", "restore", "--check", found[0]),
                    check=False)
    assert check.returncode == 0 and ": verified;" in check.stdout, check.stdout + check.stderr
    report(f"ravend-backup.service under systemd: {check.stdout.strip()}")


def test_web_unit_serves_the_dashboard_and_its_api(ravend_unit, report):
    box = ravend_unit
    box.run("systemctl", "start", "ravend.service", "ravend-web.service")
    try:
        fetch = ("import sys, time, urllib.request\n"
                 "for _ in range(100):\n"
                 "    try:\n"
                 "        page = urllib.request.urlopen('http://127.0.0.1:8080/').read()\n"
                 "        api = urllib.request.urlopen('http://127.0.0.1:8080/api/v1/health')\n"
                 "        chart = urllib.request.urlopen('http://127.0.0.1:8080/chart.js')\n"
                 "        break\n"
                 "    except OSError:\n"
                 "        time.sleep(0.1)\n"
                 "print(b'<title>ravend</title>' in page, api.status,"
                 " api.headers['Content-Security-Policy'].startswith(\"default-src 'self'\"),"
                 " chart.status)\n")
        got = box.run("python3", "-c", fetch, timeout=60).stdout.split()
        assert got == ["True", "200", "True", "200"], got
        props = box.show("ravend-web.service", "ActiveState", "NRestarts", "User")
        assert props == {"ActiveState": "active", "NRestarts": "0", "User": "ravend"}, props
        report("under systemd: ravend-web.service serves the page, the API and Chart.js")
    finally:
        box.run("systemctl", "stop", "ravend-web.service", "ravend.service", check=False)


def copy_into(box: Container, deb: Path) -> str:
    """The package file inside the container (whose /tmp is its own), for dpkg there."""
    inside = f"/root/{deb.name}"
    subprocess.run(["nsenter", f"--target={box.pid1}", "--all", "sh", "-c", f"cat > {inside}"],
                   input=deb.read_bytes(), env=CLEAN_ENV, check=True, timeout=60)
    return inside


def test_under_systemd_upgrade_restarts_what_runs_remove_stops_install_says_what_to_do(
        ravend_unit, builds):
    box = ravend_unit
    companions = ("ravend-repeater.service", "ravend-mongo-ingest.service")
    # This machine's image has Docker's policy-rc.d, which forbids every start and restart of
    # a maintainer script: a real system has none (the container's overlay is thrown away).
    box.run("rm", "-f", "/usr/sbin/policy-rc.d")
    box.run("systemctl", "start", "ravend.service")
    before = box.show("ravend.service", "MainPID")["MainPID"]
    # Upgrade: the running ravend restarted, the stopped companions left stopped, not a word.
    upgrade = box.run("dpkg", "-i", copy_into(box, builds.upgrade_deb), timeout=180)
    output = upgrade.stdout + upgrade.stderr
    assert NOT_STARTING not in output and NEXT_STEP not in output, output
    after = box.show("ravend.service", "MainPID", "ActiveState")
    assert after["ActiveState"] == "active" and after["MainPID"] != before, (before, after)
    for unit in companions:
        assert box.show(unit, "ActiveState")["ActiveState"] == "inactive", unit
    # Remove: the running ravend stopped (its program is gone).
    box.run("dpkg", "-r", "ravend", timeout=180)
    assert box.run("kill", "-0", after["MainPID"], check=False).returncode != 0, (
        "ravend still runs after the package was removed")
    # A first install: one line of what to do, none of deb-systemd-invoke's, nothing started.
    box.run("dpkg", "--purge", "ravend", timeout=180)
    install = box.run("dpkg", "-i", copy_into(box, builds.deb), timeout=180)
    output = install.stdout + install.stderr
    hints = [line for line in output.splitlines() if line.startswith(NEXT_STEP)]
    assert len(hints) == 1 and "systemctl enable --now ravend" in hints[0], output
    assert NOT_STARTING not in output, output
    for unit in ("ravend.service", *companions):
        props = box.show(unit, "ActiveState", "UnitFileState")
        assert props == {"ActiveState": "inactive", "UnitFileState": "disabled"}, (unit, props)
    # The one unit the package enables and starts: the daily backup's timer.
    props = box.show("ravend-backup.timer", "ActiveState", "UnitFileState")
    assert props == {"ActiveState": "active", "UnitFileState": "enabled"}, props
    # journald files ravend's lines at their own priority: with no stick (port = auto), its
    # warning is in `journalctl -p warning`, its start line is not, and no "<4>" is left.
    box.run("systemctl", "start", "--no-block", "ravend.service")
    try:
        def warnings() -> str:
            return box.run("journalctl", "--no-pager", "-o", "cat", "-p", "warning",
                           "-u", "ravend.service").stdout

        box.wait_for(lambda: "WARNING device unavailable" in warnings(), 30,
                     "ravend's warning in journalctl -p warning")
        assert "INFO ravend started" not in warnings()
        assert "INFO ravend started" in box.journal("ravend.service")
        assert not re.search(r"^<\d>", box.journal("ravend.service"), re.M)
    finally:
        box.run("systemctl", "stop", "ravend.service", check=False)


# --- upgrade, remove, purge ------------------------------------------------------------------


def test_upgrade_keeps_the_edited_config_and_the_data(installed, builds):
    # An edit of the admin's (another one, in case the test above did not run) and the data.
    with CONF.open("a") as conf:
        conf.write("# edited before the upgrade\n")
    if not any(STATE.iterdir()):
        (STATE / "marker").write_text("data of the old version\n")
    conf_before = CONF.read_bytes()
    data_before = tree_digest(STATE)
    user_before = pwd.getpwnam("ravend")
    apt_get("install", str(builds.upgrade_deb))
    assert installed_version() == builds.upgrade_version
    assert CONF.read_bytes() == conf_before
    assert not list(CONF.parent.glob("*.dpkg-*")), "dpkg left a new conffile beside it"
    assert owner(CONF) == ("root", "ravend", 0o640)
    assert tree_digest(STATE) == data_before
    assert pwd.getpwnam("ravend") == user_before


def test_remove_keeps_the_data_and_the_config(installed):
    conf_before = CONF.read_bytes()
    data_before = tree_digest(STATE)
    apt_get("remove", "ravend")
    assert package_status() == "config-files"
    assert not Path("/usr/bin/ravend").exists()
    assert CONF.read_bytes() == conf_before
    assert tree_digest(STATE) == data_before


def test_purge_removes_the_data_and_the_config_but_not_the_user(installed):
    apt_get("purge", "ravend")
    assert package_status() == ""
    for gone in (CONF.parent, STATE, RULES, UNIT_DIR / "ravend.service"):
        assert not gone.exists(), f"{gone} is left after the purge"
    assert run(["dpkg-statoverride", "--list", str(CONF)], check=False).returncode != 0
    # Files elsewhere may still belong to the user: Debian leaves system users in place.
    assert user_exists()


def test_postinst_falls_back_to_adduser_without_systemd_sysusers(builds, tmp_path):
    # A systemd-sysusers that fails, first on PATH of dpkg and so of the postinst.
    delete_user()
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "systemd-sysusers").write_text("#!/bin/sh\necho 'failing for the test' >&2\nexit 1\n")
    (shim / "systemd-sysusers").chmod(0o755)
    env = {**CLEAN_ENV, "PATH": f"{shim}:{DEBIAN_PATH}"}
    run(["dpkg", "-i", str(builds.deb)], env=env)
    try:
        user = pwd.getpwnam("ravend")
        assert user.pw_dir == str(STATE)
        assert user.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin")
        assert "dialout" in run(["id", "-Gn", "ravend"]).stdout.split()
        assert owner(STATE)[:2] == ("ravend", "ravend")
        assert owner(CONF) == ("root", "ravend", 0o640)
    finally:
        run(["dpkg", "--purge", "ravend"])
    assert not STATE.exists() and not CONF.parent.exists()

