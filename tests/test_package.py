"""The packaging files agree with the code: version, man pages, units, udev rules, install list.

Static checks of debian/, man/, systemd/ and udev/ against the code. They only read files, so
they run in every test run, on both stacks. The built and installed package is tested by
tests/package (make check-deb).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from ravend import __version__, config, device
from ravend.cli import ravenctl

ROOT = Path(__file__).resolve().parent.parent


def man_text(name: str) -> str:
    """A man page's source with roff's escaped hyphens made plain."""
    return (ROOT / "man" / name).read_text(encoding="utf-8").replace("\\-", "-")


def help_of(main: Callable[[list[str]], object], argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(argv)
    return out.getvalue()


def long_options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


def test_changelog_version_is_the_package_version():
    first = (ROOT / "debian/changelog").read_text(encoding="utf-8").splitlines()[0]
    match = re.match(r"ravend \(([^)]+)\) ", first)
    assert match, f"debian/changelog starts with {first!r}"
    assert match[1] == __version__, (
        f"debian/changelog has {match[1]}, ravend/_version.py {__version__}: add a changelog"
        " entry for the new version"
    )


@pytest.mark.parametrize("page, module", [("ravend.8", "ravend.cli.ravend"),
                                          ("ravend-repeater.8", "ravend.cli.repeater"),
                                          ("ravend-mongo-ingest.8", "ravend.cli.mongo_ingest"),
                                          ("ravend-web.8", "ravend.cli.web")])
def test_program_man_page_has_every_option(page, module):
    options = long_options(importlib.import_module(module).parser().format_help())
    missing = sorted(o for o in options if o not in man_text(page))
    assert options and not missing, f"man/{page} does not mention {missing}"


def subcommands(help_text: str) -> list[str]:
    """The COMMAND or ACTION names an argparse help lists (indented by four spaces)."""
    return re.findall(r"^    ([a-z][a-z-]*)(?:  |$)", help_text, re.M)


def test_ravenctl_man_page_has_every_command_and_option():
    page = man_text("ravenctl.1")
    commands = subcommands(ravenctl.parser().format_help())
    assert "status" in commands, commands
    for command in commands:
        help_text = help_of(ravenctl.main, [command, "--help"])
        actions = [] if command == "simulate" else subcommands(help_text)
        for argv in ([[command, a] for a in actions] or [[command]]):
            name = " ".join(argv)
            assert re.search(rf"^\.B {name}( |$)", page, re.M), f"man/ravenctl.1 has no {name}"
            if actions:
                help_text = help_of(ravenctl.main, [*argv, "--help"])
            missing = sorted(o for o in long_options(help_text) if o not in page)
            assert not missing, f"man/ravenctl.1 does not mention {name} {missing}"


def test_ravenctl_man_page_names_every_simulator_quirk():
    from ravend.simulator import QUIRKS

    page = man_text("ravenctl.1")
    missing = sorted(q for q in QUIRKS if q not in page)
    assert not missing, f"man/ravenctl.1 does not list the quirks {missing}"


@pytest.mark.parametrize("section", sorted(config.SECTIONS))
def test_config_man_page_has_every_key(section):
    page = man_text("ravend.conf.5")
    assert f'.SH "[{section}] SECTION"' in page, f"man/ravend.conf.5 has no [{section}]"
    body = page.split(f'.SH "[{section}] SECTION"', 1)[1].split("\n.SH ", 1)[0]
    # Each key is named in the tag of an entry: `.BR key " (default ...)"` or `.BR a ", " b`.
    tags = set()
    for line in re.findall(r"^\.BR? (.*)$", body, re.M):
        tags.update(re.findall(r"[a-z][a-z0-9_]*", line.split("(")[0]))
    keys = [f.name for f in dataclasses.fields(config.SECTIONS[section])]
    missing = [k for k in keys if k not in tags]
    assert not missing, f"man/ravend.conf.5 [{section}] does not describe {missing}"


def test_unit_runs_ravend_with_the_default_paths():
    unit = (ROOT / "systemd/ravend.service").read_text(encoding="utf-8")
    assert f"ExecStart=/usr/bin/ravend --config {config.DEFAULT_PATH}\n" in unit
    assert Path("/var/lib/ravend") == config.DEFAULT_STATE_DIR
    assert "StateDirectory=ravend\n" in unit
    assert "d /var/lib/ravend " in (ROOT / "debian/ravend.tmpfiles").read_text(encoding="utf-8")


def test_udev_rules_make_the_links_and_ids_the_code_looks_for():
    rules = (ROOT / "udev/60-ravend.rules").read_text(encoding="utf-8")
    links = set(re.findall(r'SYMLINK\+="([^"$]+)"', rules))
    missing = sorted(link for link in device.UDEV_LINKS if link.removeprefix("/dev/") not in links)
    assert not missing, f"udev/60-ravend.rules does not create {missing} (device.UDEV_LINKS)"
    for vendor, product in (device.RAVEN_USB, device.EMU2_USB):
        ids = f'ATTRS{{idVendor}}=="{vendor:04x}", ATTRS{{idProduct}}=="{product:04x}"'
        assert ids in rules, f"udev/60-ravend.rules does not match {vendor:04x}:{product:04x}"


def test_install_list_names_existing_files():
    lines = (ROOT / "debian/ravend.install").read_text(encoding="utf-8").splitlines()
    sources = [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert sources and not missing, f"debian/ravend.install names missing files {missing}"
    pages = (ROOT / "debian/ravend.manpages").read_text(encoding="utf-8").splitlines()
    missing = [p for p in pages if p and not p.startswith("#") and not (ROOT / p).exists()]
    assert not missing, f"debian/ravend.manpages names missing files {missing}"
