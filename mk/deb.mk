# The Debian package's tests (included by the Makefile; see doc/packaging.md).
#
#   make deb          (Makefile) build out/ravend_VERSION_all.deb, its .changes and .buildinfo,
#                     and out/ravend.deb, a copy for `apt install ./out/ravend.deb`
#   make check-deb    the package tests, tests/package: build, lintian, install on this machine,
#                     user, files, units, udev rules, the installed ravend on a simulated stick,
#                     upgrade, remove, purge, and the package purged again at the end, whatever
#                     happened. Needs root. The other test targets leave tests/package out.
#
# PYTEST_ARGS selects as for the other test targets: make check-deb PYTEST_ARGS='-x'
# (the tests build on each other: select with -k only what still makes sense alone).

.PHONY: check-deb

# The tests build the package themselves (into out/, and an upgrade into a scratch folder).
check-deb: $(STAMP_APT)
	@test "$$(id -u)" -eq 0 || { echo "make $@: needs root (installs and purges ravend)" >&2; exit 1; }
	RAVEND_TEST_STACK=debian RAVEND_PACKAGE_TEST=1 $(DEBIAN_ENV) $(DEBIAN_PYTHON) -m pytest \
		-p no:cacheprovider $(PYTEST_ARGS) tests/package
