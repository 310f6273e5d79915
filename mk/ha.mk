# make check-ha: a real Home Assistant core (2024.3.3, .venv-ha) against a real ravend and a
# private Mosquitto: every entity in HA's state machine with the intended unit, device class
# and state class, one device per meter, and no issue in the energy dashboard's validation
# (tests/ha_core_check.py). Not part of `make check`: a cold HA start takes a minute or two.
# `make check` validates every discovery config with HA's own schemas instead
# (tests/test_ha_discovery.py).

.PHONY: check-ha

check-ha: $(STAMP_APT) $(STAMP_SECANTUS) $(STAMP_HA)
	RAVEND_TEST_STACK=debian $(DEBIAN_ENV) $(DEBIAN_PYTHON) -m pytest -p no:cacheprovider \
		$(PYTEST_ARGS) tests/ha_core_check.py
