#!/usr/bin/env bash
# The whole test suite, from a fresh machine: provisions what the tests need (Docker engine, test
# image, Mosquitto, Python tools), then runs fmt, clippy, the OpenAPI drift check and every test.
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "provision (Docker engine, test image, Mosquitto, Python tools)"
bash scripts/provision.sh
step "provision the browser (Debian's chromium, playwright-core)"
bash scripts/provision-browser.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --bins --locked

step "OpenAPI drift check"
./target/debug/zedops openapi --check openapi/zedops.json

step "tests"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${ZEDOPS_TEST_THREADS:-4}"
