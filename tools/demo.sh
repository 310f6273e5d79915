#!/usr/bin/env bash
# The README's no-hardware demo: a simulated RAVEn on a pty → ravend → SQLite → ravenctl status.
# Runs from the source tree as the current user; everything lands in ./.demo (delete it freely;
# DEMO_DIR puts it elsewhere).
# DEMO_SECONDS (default 30) sets how long ravend logs; the simulator runs at the real rate
# (a demand every 8 s, as a real stick pushes), DEMO_SPEED=10 makes it ten times faster.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${DEMO_SECONDS:-30}
speed=${DEMO_SPEED:-1}
py=/usr/bin/python3
export PYTHONPATH=$PWD PATH=/usr/sbin:/usr/bin:/sbin:/bin

# The runtime needs only Debian's pyserial (sdnotify and python-daemon are optional here).
if ! $py -c 'import serial' 2>/dev/null; then
    echo "demo: installing python3-serial (Debian package)" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-serial >/dev/null
fi

demo=${DEMO_DIR:-$PWD/.demo}
rm -rf "$demo"
mkdir -p "$demo/state"
cat > "$demo/ravend.conf" <<CONF
[service]
state_dir = $demo/state
control_socket = $demo/control
[device]
port = $demo/raven
CONF

$py -m ravend.cli.ravenctl simulate --link "$demo/raven" --speed "$speed" --seed 1 \
    > "$demo/simulator.log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true; wait $sim 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -e "$demo/raven" ] && break; sleep 0.1; done

echo "demo: simulated RAVEn on $demo/raven; ravend logs for ${seconds}s (Ctrl-C stops early)"
timeout --signal=TERM --preserve-status "$seconds" \
    $py -m ravend.cli.ravend --config "$demo/ravend.conf" || true
echo
echo "demo: \$ ravenctl status"
$py -m ravend.cli.ravenctl status --config "$demo/ravend.conf" || true
