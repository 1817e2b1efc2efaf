#!/usr/bin/env bash
# The clustered MQTT 5 broker of the cluster tests and benchmarks (tests/tests/cluster.rs,
# docs/operations.md § "A clustered broker"): `zedops-rmqtt` (tools/rmqtt), rmqtt 0.24's server
# with only the plugins zedops uses, built once from crates.io with its lock file and cached.
# The full `rmqttd` (700 crates, Kafka and Pulsar bridges) took 34 min on two cores; this one
# builds in 13–16 min cold (430 crates), 1 min after a change of tools/rmqtt.
#
#   bash scripts/provision-cluster.sh           build it into the cache when it is missing or stale
#   bash scripts/provision-cluster.sh --check   exit 0 only if the cached binary is current
#
# The cache: ${XDG_CACHE_HOME:-$HOME/.cache}/zedops/rmqtt/bin/zedops-rmqtt (tests find it there,
# or at $ZEDOPS_RMQTT), with a stamp of the sources it was built from; the build directory
# (rmqtt-build, beside it) is kept so that a change of tools/rmqtt rebuilds only that crate.
# Building needs Debian's protobuf-compiler (rmqtt's gRPC), cmake and libssl-dev, installed here
# when absent.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$HERE/tools/rmqtt"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/zedops"
ROOT="$CACHE/rmqtt"
BIN="$ROOT/bin/zedops-rmqtt"
STAMP="$ROOT/sources.sha256"
LOG="$CACHE/rmqtt-build.log"

step() { printf '[provision-cluster] %s\n' "$*"; }
die()  { printf '[provision-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

sources() { (cd "$SRC" && cat Cargo.toml Cargo.lock src/*.rs) | sha256sum | cut -d' ' -f1; }
# A binary from an interrupted run, or from other sources, is no binary.
usable() { [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$(sources)" ] && "$BIN" --version >/dev/null 2>&1; }

case "${1:-}" in
  --check) usable && { step "zedops-rmqtt cached at $BIN"; exit 0; }; step "zedops-rmqtt is not cached (or its sources changed)"; exit 1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if usable; then
  step "zedops-rmqtt cached at $BIN"
  exit 0
fi

missing=()
for p in protobuf-compiler cmake libssl-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
mkdir -p "$CACHE"
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root"
  step "apt-get install ${missing[*]} (to build zedops-rmqtt)"
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get -q -y -o DPkg::Lock::Timeout=600 install "${missing[@]}" >>"$LOG" 2>&1; }
  # A fresh machine's package lists may be stale: update once and try again.
  apt_install || { apt-get -q -y update >>"$LOG" 2>&1 && apt_install; } \
    || die "apt-get install ${missing[*]} failed (log: $LOG)"
fi

# The full rmqttd of earlier versions of this script: gigabytes nobody uses any more.
rm -rf "$CACHE/rmqttd-0.24.0" "$CACHE/rmqttd-build"

step "building zedops-rmqtt (rmqtt 0.24 from crates.io; about 15 minutes on two cores when cold; log $LOG)"
start=$(date +%s)
if ! (cd "$SRC" && CARGO_TARGET_DIR="$CACHE/rmqtt-build" cargo build --release --locked) >"$LOG" 2>&1; then
  tail -30 "$LOG" >&2
  die "building zedops-rmqtt failed (full log: $LOG)"
fi
# Our code like the workspace's: clippy with warnings as errors, when the sources change (the
# stamp below), in the same target directory.
step "cargo clippy on tools/rmqtt (warnings are errors)"
if ! (cd "$SRC" && CARGO_TARGET_DIR="$CACHE/rmqtt-build" cargo clippy --release --locked -- -D warnings) >>"$LOG" 2>&1; then
  tail -30 "$LOG" >&2
  die "clippy found problems in tools/rmqtt (full log: $LOG)"
fi
mkdir -p "$ROOT/bin"
install -m 0755 "$CACHE/rmqtt-build/release/zedops-rmqtt" "$BIN"
sources >"$STAMP"
usable || die "zedops-rmqtt was built but does not run: $BIN"
step "zedops-rmqtt built in $(( $(date +%s) - start )) s: $BIN"
