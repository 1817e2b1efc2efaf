#!/usr/bin/env bash
# Runs zedops on this host on the embedded defaults: MQTT broker + HTTP API + dashboard + an agent
# for this host's Docker engine. Starts a Docker engine first when none answers (installing
# Debian's docker.io if needed), builds the release binary, then runs `zedops serve --local-agent`.
# Extra arguments go to `zedops serve` (e.g. --listen 0.0.0.0:8420).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "[serve] no Docker engine answers: provisioning one (scripts/provision.sh)"
  ZEDOPS_SKIP_SMOKE=1 bash scripts/provision.sh
fi
cargo build --release --bin zedops
exec ./target/release/zedops serve --local-agent "$@"
