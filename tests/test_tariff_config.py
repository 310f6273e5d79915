"""The [tariff] section (ravend.config): time-of-use syntax errors in one line, every key
checked, and a full section parsed into the tariff the roll-ups use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ravend.config import ConfigError, TariffConfig, load
from ravend.rollup import HOUR
from ravend.tariff import tariff_of
from tests.helpers.config import refused
from tests.helpers.cost import UTC, F, write_conf


@pytest.mark.parametrize(("periods", "expected"), [
    ("Mon-Fry 16-21: 0.45; *: 0.28", r"'Fry' is not a day"),
    ("Mon-Fri 16-21: 0.45", r"a price for every hour of the week \(Mon 0:00 has none"),
    ("Mon-Fri 16-21 0.45; *: 0.28", r"no ': PRICE'"),
    ("Mon 16-25: 0.45; *: 0.28", r"'25' is not an hour from 0 to 24"),
    ("Mon 5-5: 0.45; *: 0.28", r"'5-5' is an empty range of hours"),
    ("Mon Tue: 0.45; *: 0.28", r"days given twice"),
    ("Mon: cheap; *: 0.28", r"a decimal price such as 0.28"),
])
def test_time_of_use_syntax_errors_are_one_line(tmp_path: Path, periods: str,
                                                expected: str) -> None:
    conf = write_conf(tmp_path / "ravend.conf", f"[tariff]\nperiods = {periods}\n")
    message = refused(conf, expected)
    assert message.startswith(f"{conf}:2: [tariff] periods = ")


@pytest.mark.parametrize(("body", "expected"), [
    ("rate = 0.28\nperiods = *: 0.28\n", r"periods: set rate or periods, not both"),
    ("source = config\n", r"source: config needs a rate or periods"),
    ("currency = dollars\n", r"expected an ISO 4217 currency"),
    ("export_rate = lots\n", r"expected a decimal price"),
    ("source = utility\n", r"expected one of auto, meter, config"),
])
def test_tariff_keys_are_checked(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(write_conf(tmp_path / "ravend.conf", f"[tariff]\n{body}"))


def test_tariff_section_parses(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "ravend.conf",
                      "[retention]\ntime_zone = UTC\n[tariff]\nsource = config\n"
                      "periods = Mon-Fri 7-23: 0.3120\n  Sat,Sun: 0.2200\n  *: 0.1500\n"
                      "currency = 978\nexport_rate = 0.0825\n")
    config = load(conf)
    assert config.tariff.currency == "EUR" and config.tariff.export_rate == F("0.0825")
    tariff = tariff_of(config)
    assert tariff.time_zone == "UTC" and tariff.plan is not None
    monday = int(dt.datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    assert [tariff.plan.price_at(monday + h * HOUR, UTC) for h in (6, 7, 22, 23)] == [
        F("0.15"), F("0.312"), F("0.312"), F("0.15")]
    assert TariffConfig().source == "auto" and tariff_of(load(tmp_path / "none")).plan is None
