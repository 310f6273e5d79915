# make check-ha: a real Home Assistant core (2024.3.3, .venv-ha) against a real ravend and a
# private Mosquitto: every entity in HA's state machine with the intended unit, device class
# and state class, one device per meter, and no issue in the energy dashboard's validation
# (tests/ha_core_check.py). Part of `make check` (about 10 s once .venv-ha is built), beside
# tests/test_ha_discovery.py, which runs every discovery config through HA's own schemas on both
# stacks.

.PHONY: check-ha

check-ha: $(STAMP_APT) $(STAMP_SECANTUS) $(STAMP_HA)
	RAVEND_TEST_STACK=debian $(DEBIAN_ENV) $(DEBIAN_PYTHON) -m pytest -p no:cacheprovider \
		$(PYTEST_ARGS) tests/ha_core_check.py
