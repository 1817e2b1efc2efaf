#!/usr/bin/env bash
# Benchmarks of the control path and fleet scale, each beside a reference measured in the same run
# (docs/benchmarks.md). One command:
#
#   bash scripts/bench.sh                 every scenario (about 10 minutes on 2 cores)
#   bash scripts/bench.sh --quick         a short smoke run (about 2 minutes)
#   bash scripts/bench.sh fleet           one scenario: mqtt http list restart events fleet footprint streams cluster hook
#   bash scripts/bench.sh --fleet-sizes 100,1000 fleet
#
# Builds in release mode, provisions the machine (Docker engine, test image, Mosquitto, wrk,
# hyperfine: scripts/provision.sh), raises the open-files limit for the fleet scenario, then runs
# target/release/zedops-bench. Output goes to the terminal and to target/bench/bench-<time>.md.
# Everything started is stopped at the end; test containers are labelled zedops.test=1 and
# zedops.test.run=zedops-bench and removed.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

args=("$@")
scenario=all
for a in "$@"; do
  case "$a" in
    all|mqtt|http|list|restart|events|fleet|footprint|streams|cluster|hook) scenario="" ;;
  esac
done
[ -z "$scenario" ] || args+=(all)

step "provision (Docker engine, test image, Mosquitto, wrk, hyperfine)"
if [ "$(id -u)" = 0 ]; then
  ZEDOPS_SKIP_SMOKE="${ZEDOPS_SKIP_SMOKE:-1}" bash scripts/provision.sh >&2
elif ! bash scripts/provision.sh --check >&2; then
  echo "not provisioned and not root: run 'sudo bash scripts/provision.sh' first" >&2
  exit 1
fi

step "the cluster broker (zedops-rmqtt from tools/rmqtt, built once and cached: scripts/provision-cluster.sh)"
bash scripts/provision-cluster.sh >&2

step "cargo build --release --workspace --bins"
cargo build --release --workspace --bins >&2

# The fleet scenario holds one socket per simulated agent in this process and as many in the
# broker (5000 agents: ~5000 descriptors each, plus the API's).
hard=$(ulimit -Hn)
want=65536
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
  echo "warning: open files limit is $(ulimit -n); the 5000-agent fleet needs about 12000" >&2
fi

mkdir -p target/bench
out="target/bench/bench-$(date -u +%Y%m%dT%H%M%SZ).md"
step "target/release/zedops-bench ${args[*]}  (also written to $out)"
cleanup() {
  # Containers of an interrupted run (the benchmark removes its own on a normal exit).
  ids=$(docker ps -aq --filter label=zedops.test.run=zedops-bench 2>/dev/null || true)
  if [ -n "$ids" ]; then docker rm -f -v $ids >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
# In the background so that a SIGTERM or SIGINT to this script reaches the benchmark at once (a
# shell runs its traps only after the foreground command ends); the benchmark then stops what it
# started and exits.
target/release/zedops-bench "${args[@]}" > >(tee "$out") &
bench=$!
trap 'kill -TERM "$bench" 2>/dev/null || true' TERM
trap 'kill -INT "$bench" 2>/dev/null || true' INT
status=0
while kill -0 "$bench" 2>/dev/null; do
  status=0
  wait "$bench" || status=$?
done
wait 2>/dev/null || true  # tee: the last lines reach the terminal and the file before we exit
exit "$status"
