"""Which interpreter and library versions this run uses: proof that the two runs differ.

`make test-debian` sets RAVEND_TEST_STACK=debian: Debian's /usr/bin/python3 with the python3-*
packages from /usr/lib/python3/dist-packages (on bookworm: paho-mqtt 1.6, pymongo 3.11).
`make test-pypi` sets RAVEND_TEST_STACK=pypi: .venv-pypi with the newest PyPI releases
(paho-mqtt 2.x, pymongo 4.x) and none of Debian's dist-packages.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ravend

REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"

# import name -> (PyPI distribution, Debian package)
LIBRARIES = {
    "serial": ("pyserial", "python3-serial"),
    "MySQLdb": ("mysqlclient", "python3-mysqldb"),
    "paho.mqtt": ("paho-mqtt", "python3-paho-mqtt"),
    "pymongo": ("pymongo", "python3-pymongo"),
    "sdnotify": ("sdnotify", "python3-sdnotify"),
    "daemon": ("python-daemon", "python3-daemon"),
    "prometheus_client": ("prometheus-client", "python3-prometheus-client"),
}


def stack() -> str:
    value = os.environ.get("RAVEND_TEST_STACK")
    if value not in ("debian", "pypi"):
        pytest.fail(
            f"RAVEND_TEST_STACK is {value!r}: run the tests through make "
            "(`make test-debian`, `make test-pypi`, or `make check` for both), which picks "
            "the interpreter and libraries of each stack.",
            pytrace=False,
        )
    return value


def numeric(version: str) -> tuple[int, ...]:
    """The leading dotted numbers of a version: '1.6.1' -> (1, 6, 1), '3.11.0rc1' -> (3, 11, 0)."""
    match = re.match(r"\d+(\.\d+)*", version)
    assert match, f"not a version: {version!r}"
    return tuple(int(part) for part in match.group().split("."))


def dpkg_upstream_version(package: str) -> str:
    """The upstream part of an installed Debian package's version ('1:2.3+dfsg-1' -> '2.3')."""
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    version = re.sub(r"^\d+:", "", version)  # epoch
    version = version.rsplit("-", 1)[0]  # Debian revision
    return re.split(r"[+~]", version)[0]  # repack suffixes (+dfsg, +ds, ~rc)


def dpkg_owner(path: str) -> str:
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True).stdout
    return out.split(":", 1)[0] if out else f"(no Debian package owns {path})"


def test_ravend_is_imported_from_the_source_tree():
    stack()
    assert Path(ravend.__file__).resolve().is_relative_to(REPO_ROOT)


def test_interpreter_of_the_stack():
    if stack() == "debian":
        assert sys.executable == "/usr/bin/python3"
        assert sys.prefix == sys.base_prefix == "/usr"
    else:
        venv = REPO_ROOT / ".venv-pypi"
        assert Path(sys.prefix).resolve() == venv.resolve()
        assert Path(sys.executable).parent.resolve() == (venv / "bin").resolve()
        assert not [p for p in sys.path if "dist-packages" in p], "the venv sees dist-packages"


@pytest.mark.parametrize("module_name", sorted(LIBRARIES))
def test_library_comes_from_the_stack(module_name):
    dist, deb = LIBRARIES[module_name]
    which = stack()
    module = importlib.import_module(module_name)
    path = str(Path(module.__file__).resolve())
    version = importlib.metadata.version(dist)
    if which == "debian":
        assert path.startswith(DEBIAN_DIST_PACKAGES + "/"), path
        assert dpkg_owner(path) == deb
        assert numeric(version) == numeric(dpkg_upstream_version(deb)), (dist, version)
    else:
        site = Path(sys.prefix).resolve() / "lib"
        assert Path(path).is_relative_to(site), path
        assert Path(sys.prefix).resolve() == (REPO_ROOT / ".venv-pypi").resolve()


def test_major_versions_of_the_stack():
    which = stack()
    paho = numeric(importlib.metadata.version("paho-mqtt"))
    pymongo = numeric(importlib.metadata.version("pymongo"))
    if which == "pypi":
        assert paho >= (2,), paho
        assert pymongo >= (4,), pymongo
    elif Path("/etc/debian_version").read_text().startswith("12"):
        # bookworm ships the old majors; the PyPI run covers the new ones.
        assert paho < (2,), paho
        assert pymongo < (4,), pymongo
