#!/usr/bin/env bash
# The clustered MQTT 5 broker of the cluster tests and benchmarks (tests/tests/cluster.rs,
# docs/operations.md § "A clustered broker"): rmqttd, built once from crates.io at a pinned
# version and cached, since a build takes about 20 minutes on two cores.
#
#   bash scripts/provision-cluster.sh           build rmqttd into the cache when it is missing
#   bash scripts/provision-cluster.sh --check   exit 0 only if the cached binary is there
#
# The cache: ${XDG_CACHE_HOME:-$HOME/.cache}/zedops/rmqttd-<version>/bin/rmqttd (tests find it
# there, or at $ZEDOPS_RMQTTD). Building needs Debian's protobuf-compiler (rmqtt's gRPC), cmake
# and libssl-dev (its Kafka bridge's C build), installed here when absent. The build directory is
# removed afterwards: it holds gigabytes the binary does not need.
set -euo pipefail

VERSION=0.24.0
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/zedops"
ROOT="$CACHE/rmqttd-$VERSION"
BIN="$ROOT/bin/rmqttd"
LOG="$CACHE/rmqttd-$VERSION-build.log"

step() { printf '[provision-cluster] %s\n' "$*"; }
die()  { printf '[provision-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# A binary from an interrupted run is no binary: it must answer --version.
usable() { [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; }

case "${1:-}" in
  --check) usable && { step "rmqttd $VERSION cached at $BIN"; exit 0; }; step "rmqttd $VERSION is not cached"; exit 1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if usable; then
  step "rmqttd $VERSION cached at $BIN"
  exit 0
fi

missing=()
for p in protobuf-compiler cmake libssl-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root"
  step "apt-get install ${missing[*]} (to build rmqttd)"
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$CACHE"
  apt_install() { apt-get -q -y -o DPkg::Lock::Timeout=600 install "${missing[@]}" >>"$LOG" 2>&1; }
  # A fresh machine's package lists may be stale: update once and try again.
  apt_install || { apt-get -q -y update >>"$LOG" 2>&1 && apt_install; } \
    || die "apt-get install ${missing[*]} failed (log: $LOG)"
fi

mkdir -p "$CACHE"
step "building rmqttd $VERSION from crates.io (about 20 minutes on two cores; once per machine, log $LOG)"
start=$(date +%s)
# Release without debug info; the build directory goes when the binary is in place.
if ! CARGO_TARGET_DIR="$CACHE/rmqttd-build" CARGO_PROFILE_RELEASE_DEBUG=false CARGO_INCREMENTAL=0 \
    cargo install rmqttd --version "=$VERSION" --locked --root "$ROOT" >"$LOG" 2>&1; then
  tail -30 "$LOG" >&2
  die "building rmqttd failed (full log: $LOG)"
fi
rm -rf "$CACHE/rmqttd-build"
usable || die "rmqttd was built but does not run: $BIN"
step "rmqttd $VERSION built in $(( $(date +%s) - start )) s: $BIN"
