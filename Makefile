# ravend: build and test entry points.
#
#   make check        the whole suite, as CI runs it: deps, lint, test-debian, test-pypi, check-ha, check-deb
#   make deps         install what the build and the tests need (idempotent; stamps in .cache/)
#   make lint         ruff (newest, from .venv-pypi) over ravend tests bench, and mypy (mypy.ini)
#   make test-debian  the tests on Debian's /usr/bin/python3 and its python3-* packages
#   make test-pypi    the tests on the newest PyPI releases, in .venv-pypi
#   make demo | bench | bench-quick | deb   run tools/demo.sh, bench/run.py, tools/package-build.sh
#   make bench-long   the benchmark's long variants: the `slow` tests (1M readings, 1M fuzz
#                     inputs, 5 real minutes unplugged) on Debian's stack, about 10 minutes
#
# Test selection: make test-pypi PYTEST_ARGS='-k mqtt -x'  (PYTEST_MARK='' also runs the slow ones)
# Package lists: tools/deps/apt*.txt, tools/deps/pypi.txt, tools/deps/secantus.txt, tools/deps/ha.txt.
# Parts of the project add their own targets in mk/NAME.mk (included at the end).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := check
.DELETE_ON_ERROR:

DEBIAN_PYTHON := /usr/bin/python3
DEBIAN_PATH := /usr/sbin:/usr/bin:/sbin:/bin
VENV_PYPI := .venv-pypi
VENV_SECANTUS := .venv-secantus
VENV_HA := .venv-ha
CACHE := .cache
DEPS := tools/deps

APT_LISTS := $(sort $(wildcard $(DEPS)/apt*.txt))
STAMP_APT := $(CACHE)/apt.stamp
STAMP_PYPI := $(CACHE)/venv-pypi.stamp
STAMP_SECANTUS := $(CACHE)/venv-secantus.stamp
STAMP_HA := $(CACHE)/venv-ha.stamp

PYTEST_MARK ?= not slow
PYTEST_ARGS ?=
TESTS ?= tests
# tests/package installs and purges the .deb as root: only `make check-deb` (mk/deb.mk) runs it.
TEST_IGNORE := --ignore=tests/package
LINT_PATHS := $(wildcard ravend tests bench)
# What mypy checks: all of ravend and the bench, strict (mypy.ini; every `type: ignore` names
# its code and says why).
MYPY_PATHS := ravend bench

# The package comes from the source tree (PYTHONPATH, and pythonpath in pytest.ini); nothing of
# the caller's interpreter (pyenv's python3 is first on PATH here) may leak into either run.
# Debian run: Debian's interpreter, PATH and dist-packages only.
DEBIAN_ENV := env -u PYTHONHOME PATH=$(DEBIAN_PATH) PYTHONPATH=$(CURDIR) PYTHONNOUSERSITE=1
# PyPI run: the venv sees only its own site-packages (no Debian dist-packages).
PYPI_ENV := env -u PYTHONHOME PYTHONPATH=$(CURDIR) PYTHONNOUSERSITE=1

.PHONY: check deps deps-clean lint test test-debian test-pypi demo bench bench-quick bench-long deb FORCE

check: deps lint test-debian test-pypi check-ha check-deb

# ---------------------------------------------------------------------------------------------
# deps: each stamp is remade when its list (or tools/deps.sh) changes; a venv that is gone is
# remade too (FORCE). tools/deps.sh only calls apt-get when a package is missing.

deps: $(STAMP_APT) $(STAMP_PYPI) $(STAMP_SECANTUS) $(STAMP_HA)

$(CACHE):
	mkdir -p $@

$(STAMP_APT): $(APT_LISTS) tools/deps.sh | $(CACHE)
	tools/deps.sh apt $(APT_LISTS)
	touch $@

$(STAMP_PYPI): $(DEPS)/pypi.txt tools/deps.sh $(if $(wildcard $(VENV_PYPI)/bin/python),,FORCE) | $(STAMP_APT)
	tools/deps.sh venv $(VENV_PYPI) $(DEPS)/pypi.txt
	touch $@

$(STAMP_SECANTUS): $(DEPS)/secantus.txt tools/deps.sh $(if $(wildcard $(VENV_SECANTUS)/bin/python),,FORCE) | $(STAMP_APT)
	tools/deps.sh venv $(VENV_SECANTUS) $(DEPS)/secantus.txt
	touch $@

# Home Assistant core (pinned), whose own code validates the discovery configs
# (tests/test_ha_discovery.py) and runs in `make check-ha`; a cold build takes minutes.
$(STAMP_HA): $(DEPS)/ha.txt tools/deps.sh $(if $(wildcard $(VENV_HA)/bin/python),,FORCE) | $(STAMP_APT)
	tools/deps.sh venv $(VENV_HA) $(DEPS)/ha.txt
	touch $@

FORCE:

# Forget the stamps and the venvs (not the Debian packages): the next `make deps` starts cold.
deps-clean:
	rm -rf $(CACHE) $(VENV_PYPI) $(VENV_SECANTUS) $(VENV_HA)

# ---------------------------------------------------------------------------------------------
# lint and tests

lint: $(STAMP_PYPI)
	$(VENV_PYPI)/bin/ruff check $(LINT_PATHS)
	$(PYPI_ENV) $(VENV_PYPI)/bin/mypy $(MYPY_PATHS)

test: test-debian test-pypi

# Tests marked pypi_only need a tool Debian does not package (schemathesis): the Debian run
# leaves them out, the PyPI run has them.
DEBIAN_MARK = $(if $(strip $(PYTEST_MARK)),($(PYTEST_MARK)) and not pypi_only,not pypi_only)

test-debian: $(STAMP_APT) $(STAMP_SECANTUS) $(STAMP_HA)
	RAVEND_TEST_STACK=debian $(DEBIAN_ENV) $(DEBIAN_PYTHON) -m pytest -p no:cacheprovider \
		-m "$(DEBIAN_MARK)" $(TEST_IGNORE) $(PYTEST_ARGS) $(TESTS)

test-pypi: $(STAMP_APT) $(STAMP_PYPI) $(STAMP_SECANTUS) $(STAMP_HA)
	RAVEND_TEST_STACK=pypi $(PYPI_ENV) $(VENV_PYPI)/bin/python -m pytest \
		-m "$(PYTEST_MARK)" $(TEST_IGNORE) $(PYTEST_ARGS) $(TESTS)

# ---------------------------------------------------------------------------------------------
# Entry points whose scripts other parts of the project own: change the script, not the target.

# $(call run-script,SCRIPT,COMMAND): COMMAND, or a clear error while SCRIPT does not exist yet.
define run-script
	@test -e $(1) || { echo "make $@: $(1) does not exist yet" >&2; exit 1; }
	$(2)
endef

# The demo needs only python3-serial, which tools/demo.sh installs if it is missing.
demo:
	$(DEBIAN_ENV) bash tools/demo.sh

bench: deps
	$(call run-script,bench/run.py,$(DEBIAN_ENV) $(DEBIAN_PYTHON) bench/run.py)

bench-quick: deps
	$(call run-script,bench/run.py,$(DEBIAN_ENV) $(DEBIAN_PYTHON) bench/run.py --quick)

bench-long: deps
	$(MAKE) test-debian PYTEST_MARK=slow

deb: $(STAMP_APT)
	$(call run-script,tools/package-build.sh,$(DEBIAN_ENV) bash tools/package-build.sh --out out)

-include mk/*.mk
