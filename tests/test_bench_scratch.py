"""The config files the bench writes (bench/scratchconf.py) keep every path in the run's scratch
directory: a bench run as root must not bind /run/ravend/control or write /var/lib/ravend,
which an installed ravend owns and a second bench run would share. Checked without running."""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePath

import pytest

from bench import processes, scratchconf, throughput, web, yearstore
from ravend.config import load
from ravend.config_sections import Config

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _absolute_paths(config: Config) -> dict[str, Path]:
    """Every value of every section that is an absolute path, by ``section.key``, plus the
    paths resolved against state_dir (the SQLite file, the repeater's watermark)."""
    found: dict[str, Path] = {}
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if not dataclasses.is_dataclass(value):
            continue
        for key in dataclasses.fields(value):
            item = getattr(value, key.name)
            if isinstance(item, (str, PurePath)) and str(item).startswith("/"):
                found[f"{section.name}.{key.name}"] = Path(item)
    found["sqlite_path"] = config.sqlite_path
    found["repeater.watermark"] = config.service.state_dir / config.repeater.watermark_file
    return found


def _assert_inside(config: Config, scratch: Path) -> None:
    paths = _absolute_paths(config)
    assert {"service.state_dir", "service.control_socket", "backup.dir"} <= set(paths)
    outside = {k: p for k, p in paths.items() if not p.is_relative_to(scratch)}
    assert not outside


def test_every_system_path_default_has_a_scratch_value() -> None:
    """A key whose packaged default is an absolute path is set by scratchconf: a new one added
    to ravend.conf fails here until the bench points it into its scratch too."""
    defaults = _absolute_paths(Config())
    system = {k for k in defaults if "." in k and k != "repeater.watermark"}
    assert system  # /run/ravend/control, /var/lib/ravend, /var/backups/ravend at least
    covered = {f"{section}.{key}" for section, keys in
               scratchconf.scratch_paths(Path("/x")).items() for key in keys}
    assert system <= covered


@pytest.mark.parametrize("sections", [None, throughput.FLAT_OUT_CONFIG, web.WRITER_CONFIG])
def test_ravends_config_is_in_its_state_dir(tmp_path: Path,
                                           sections: scratchconf.Sections | None) -> None:
    state = tmp_path / "flat-out"
    config = load(processes.ravend_config(state, sections), must_exist=True)
    assert config.service.state_dir == state
    _assert_inside(config, state)


def test_companion_config_is_in_the_scratch(tmp_path: Path) -> None:
    """As bench/idle.py, bench/mqtt.py and bench/mongo.py write theirs (no [service])."""
    path = scratchconf.write(tmp_path / "ravend.conf", tmp_path, {
        "mqtt": {"host": "127.0.0.1", "port": 1}, "repeater": {"client_id": "bench"}})
    _assert_inside(load(path, must_exist=True), tmp_path)


def test_the_year_stores_config_is_in_its_folder(tmp_path: Path) -> None:
    path = scratchconf.write(tmp_path / "ravend.conf", tmp_path,
                             yearstore.sections(tmp_path / "ravend.db"))
    config = load(path, must_exist=True)
    assert config.sqlite_path == tmp_path / "ravend.db"
    _assert_inside(config, tmp_path)


def test_no_bench_process_gets_the_defaults() -> None:
    """``--config /dev/null`` (or a hand-written [service]) would bring the system paths back."""
    for source in sorted(BENCH.glob("*.py")):
        text = source.read_text(encoding="utf-8")
        assert '"/dev/null"' not in text, source.name
        if source.name != "scratchconf.py":
            assert "[service]\\n" not in text, source.name  # in a string literal
