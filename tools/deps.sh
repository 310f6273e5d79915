#!/bin/bash
# Installs what the build and the tests need; `make deps` calls it (with stamps under .cache/).
#
#   tools/deps.sh apt LIST...         install the Debian packages named in LIST files that are missing
#   tools/deps.sh venv DIR LIST...    make DIR a venv of Debian's /usr/bin/python3 (without Debian's
#                                     dist-packages) and install the newest releases of the
#                                     requirements files LIST into it
#
# The lists live in tools/deps/: apt*.txt (one package a line, `#` comments), pypi.txt and
# secantus.txt (pip requirements files).
set -euo pipefail

DEBIAN_PYTHON=/usr/bin/python3

die() { echo "deps: $*" >&2; exit 1; }

# Package names of the apt list files: comments and blank lines dropped, each name once.
read_apt_lists() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$@" | grep -v '^$' | sort -u; }

is_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

cmd_apt() {
    [ $# -gt 0 ] || die "apt: no list file given"
    local pkgs missing=() p
    pkgs=$(read_apt_lists "$@")
    for p in $pkgs; do is_installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "deps: all $(echo "$pkgs" | wc -w) Debian packages of $* are installed"
        return 0
    fi
    echo "deps: installing missing Debian packages: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "apt: not root and no sudo; install as root: ${missing[*]}"
        sudo=(sudo)
    fi
    # Installing mariadb-server or mosquitto must not start their default instances: a machine
    # without systemd may already run one on the standard port (the postinst's start would fail
    # the install), and the tests never use them. A policy-rc.d answering 101 tells invoke-rc.d
    # and deb-systemd-invoke not to start anything; put one there only for this install.
    local policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        "${sudo[@]}" sh -c "printf '#!/bin/sh\n# temporary, from ravend tools/deps.sh\nexit 101\n' >$policy && chmod 755 $policy"
        # shellcheck disable=SC2064
        trap "${sudo[*]} rm -f $policy" EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 \
        install -y --no-install-recommends "${missing[@]}"
    for p in "${missing[@]}"; do is_installed "$p" || die "apt: $p is still not installed"; done
}

cmd_venv() {
    [ $# -ge 2 ] || die "venv: usage: venv DIR LIST..."
    local dir=$1; shift
    local req=() f
    for f in "$@"; do req+=(-r "$f"); done
    [ -x "$DEBIAN_PYTHON" ] || die "venv: $DEBIAN_PYTHON is missing (run: tools/deps.sh apt tools/deps/apt.txt)"
    if [ ! -f "$dir/pyvenv.cfg" ] || ! "$dir/bin/python" -c 'import sys' 2>/dev/null; then
        echo "deps: creating $dir with $DEBIAN_PYTHON"
        rm -rf "$dir"
        "$DEBIAN_PYTHON" -m venv "$dir"
    fi
    # No PYTHONPATH/PYTHONHOME from the caller's interpreter may leak into the venv's pip.
    local py=(env -u PYTHONPATH -u PYTHONHOME "$dir/bin/python")
    "${py[@]}" -m pip install --quiet --upgrade pip
    "${py[@]}" -m pip install --upgrade --upgrade-strategy eager "${req[@]}"
    echo "deps: $dir now has:"
    "${py[@]}" -m pip list --format=freeze 2>/dev/null | sed 's/^/  /'
}

case "${1:-}" in
    apt) shift; cmd_apt "$@" ;;
    venv) shift; cmd_venv "$@" ;;
    *) die "usage: $0 apt LIST... | venv DIR LIST..." ;;
esac
