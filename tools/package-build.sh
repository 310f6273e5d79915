#!/bin/bash
# Builds the Debian package of the working tree (make package-deb; the package tests use it too).
#
#   tools/package-build.sh [--out DIR] [--version VERSION]
#
# The tree (tracked files and untracked ones git does not ignore) is copied to a scratch folder
# and built there with `dpkg-buildpackage -us -uc -b`, so that the build writes nothing into the
# working tree, which others edit meanwhile, nor beside it. DIR (default: out) then holds
# ravend_VERSION_all.deb with its .changes and .buildinfo (for lintian), and ravend.deb, a copy
# of the .deb, for `apt install ./out/ravend.deb`. Earlier builds in DIR are removed first.
#
# --version VERSION sets the package version in the copy's debian/changelog: the package tests
# build an upgrade that way. Without it, the version is debian/changelog's, which a test keeps
# equal to ravend/_version.py.
set -euo pipefail

die() { echo "package-build: $*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/out
version=
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        *) die "usage: $0 [--out DIR] [--version VERSION]" ;;
    esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Debian's tools and interpreter only: nothing of the caller's Python may reach pybuild.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
export LC_ALL=C.UTF-8

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ravend-deb.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
src=$scratch/ravend

# The files to build: what git knows of (tracked, or untracked and not ignored) and that exists
# now; outside a git checkout, the whole tree without build output and local environments.
mkdir "$src"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$root" ls-files -z --cached --others --exclude-standard |
        (cd "$root" && while IFS= read -r -d '' f; do
            [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
        done) |
        tar -C "$root" --null -T - -cf - | tar -C "$src" -xf -
else
    tar -C "$root" --exclude=./.git --exclude='./.venv*' --exclude=./.cache --exclude=./out \
        --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ -cf - . |
        tar -C "$src" -xf -
fi
[ -f "$src/debian/changelog" ] || die "no debian/changelog in $root"

if [ -n "$version" ]; then
    sed -i "1s/^ravend ([^)]*)/ravend ($version)/" "$src/debian/changelog"
    head -1 "$src/debian/changelog" | grep -qF "ravend ($version)" ||
        die "could not set the version $version in debian/changelog"
fi

echo "package-build: building $(head -1 "$src/debian/changelog" | cut -d' ' -f1-2) in $scratch"
(cd "$src" && dpkg-buildpackage -us -uc -b) >"$scratch/build.log" 2>&1 || {
    tail -n 60 "$scratch/build.log" >&2
    die "dpkg-buildpackage failed (last 60 lines above)"
}

shopt -s nullglob
debs=("$scratch"/ravend_*_all.deb)
[ ${#debs[@]} -eq 1 ] || die "expected one ravend_*_all.deb, found ${#debs[@]}"
rm -f "$out"/ravend_*.deb "$out"/ravend_*.changes "$out"/ravend_*.buildinfo "$out/ravend.deb"
cp "$scratch"/ravend_*.deb "$scratch"/ravend_*.changes "$scratch"/ravend_*.buildinfo "$out/"
cp "${debs[0]}" "$out/ravend.deb"
cp "$scratch/build.log" "$out/build.log"
echo "package-build: $out/$(basename "${debs[0]}") (and $out/ravend.deb)"
