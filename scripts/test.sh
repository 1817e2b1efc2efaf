#!/usr/bin/env bash
# The whole test suite, from a fresh machine: provisions what the tests need (Docker engine, test
# image, Mosquitto, Python tools, Chromium, the rmqtt cluster broker of tools/rmqtt), then runs fmt, clippy, the OpenAPI drift check and every test.
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A cold build of the suite needs about 3 GB under target/ (Cargo.toml keeps debug info small);
# say so up front instead of failing in the linker twenty minutes in.
free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
if [ "${free_gb:-0}" -lt 8 ]; then
  echo "warning: only ${free_gb} GB free here; a cold build and test run needs about 3 GB (and Docker images and logs more)" >&2
fi
# A fresh clone (CI) gains nothing from incremental compilation and it costs gigabytes of disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

step "provision (Docker engine, test image, Mosquitto, Python tools)"
bash scripts/provision.sh
step "provision the browser (Debian's chromium, playwright-core)"
bash scripts/provision-browser.sh
step "provision the cluster broker (zedops-rmqtt: rmqtt from crates.io, built once and cached)"
bash scripts/provision-cluster.sh

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path tools/rmqtt/Cargo.toml -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --bins --locked

step "OpenAPI drift check"
./target/debug/zedops openapi --check openapi/zedops.json

step "tests"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${ZEDOPS_TEST_THREADS:-4}"
