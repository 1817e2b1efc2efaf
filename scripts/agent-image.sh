#!/usr/bin/env bash
# Builds the zedops agent as a local Docker image, FROM scratch: the zedops binary (stripped), the
# shared libraries `ldd` says it needs, and the CA bundle — nothing else, and no registry needed.
#
#   bash scripts/agent-image.sh [--binary PATH] [--tag TAG]
#
# Default: builds and packs target/release/zedops as `zedops-agent`. Then, on a Docker host:
#
#   docker run -d --name zedops-agent --restart unless-stopped \
#     -v /var/run/docker.sock:/var/run/docker.sock -v zedops-agent:/state \
#     zedops-agent --enroll zde_… --server http://server.lan:8420 --name NAME
#
# The credentials stay on the `zedops-agent` volume (/state), so `docker restart` (which runs the
# same command, token included) starts the enrolled agent again (docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=""
tag="zedops-agent"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "agent-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --bin zedops
  bin=target/release/zedops
fi
[ -x "$bin" ] || { echo "agent-image: $bin is not an executable" >&2; exit 2; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/root"
mkdir -p "$root/state" "$root/tmp" "$root/etc/ssl/certs"
if command -v strip >/dev/null; then strip -o "$root/zedops" "$bin"; else cp "$bin" "$root/zedops"; fi
# Every library ldd resolves (`name => /path (addr)` and the loader's `/path (addr)`), at its path.
ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u |
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
ENV ZEDOPS_STATE_DIR=/state SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
VOLUME /state
ENTRYPOINT ["/zedops", "agent"]
DOCKERFILE
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built image $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes) from $bin"
