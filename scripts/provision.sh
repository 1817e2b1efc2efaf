#!/usr/bin/env bash
# Provision this machine for the zedops test suite (DESIGN.md §9: no registry, FROM scratch + busybox).
#
#   bash scripts/provision.sh           install/start/build whatever is missing (idempotent, root, no stdin)
#   bash scripts/provision.sh --check   exit 0 only if everything is already in place; changes nothing
#
# What it ensures:
#   * Debian packages: docker.io, mosquitto, mosquitto-clients, busybox-static, wrk, hyperfine,
#     python3-paho-mqtt (for /usr/bin/python3), iproute2 (network namespaces: the "other host"
#     of tests/tests/second_host.rs), systemd (systemd-analyze verify of packaging/), openssl, postgresql (the server only; tests start their own clusters with initdb, tests/src/postgres.rs); pip `paho-mqtt` for the python3 first on PATH when
#     that is not Debian's (pyenv here).
#   * pip `openapi-python-client`, `openapi-spec-validator`, `python-dateutil` and `schemathesis` for
#     the python3 first on PATH (tests/python/: spec validation and a generated client;
#     tests/tests/api_generated_client.rs: schemathesis), in the version ranges of PIP_TOOLS below.
#   * No mosquitto left listening on 1883 (the tests start their own brokers on random ports).
#   * A Docker engine answering (DOCKER_HOST respected). If none answers, dockerd is started in the
#     background (log /var/log/zedops-dockerd.log, pidfile /var/run/docker.pid), trying flag sets
#     from the most to the least capable until one comes up.
#   * Image zedops-test-busybox:latest (FROM scratch, Debian's static busybox, label zedops.test=1),
#     rebuilt only when its inputs change (hash kept in label zedops.test.inputs).
#
# Environment knobs (all optional):
#   ZEDOPS_TEST_IMAGE          image tag to build (default zedops-test-busybox:latest)
#   ZEDOPS_DOCKERD_CANDIDATES  ';'-separated dockerd flag sets to try, in order
#   ZEDOPS_DOCKERD_TIMEOUT     seconds to wait for each dockerd attempt (default 60)
#   ZEDOPS_SKIP_SMOKE=1        skip the container lifecycle smoke test
set -euo pipefail

MODE=provision
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
export DOCKER_BUILDKIT=0   # legacy builder: no buildx plugin needed, no registry contacted for FROM scratch
export DOCKER_CLI_HINTS=false
IMAGE="${ZEDOPS_TEST_IMAGE:-zedops-test-busybox:latest}"
DOCKERD_LOG=/var/log/zedops-dockerd.log
DOCKERD_PIDFILE=/var/run/docker.pid
DOCKERD_TIMEOUT="${ZEDOPS_DOCKERD_TIMEOUT:-60}"
APT_LOG=/var/log/zedops-provision-apt.log
# Most capable first. Each attempt names its storage driver explicitly, so a /var/lib/docker that has
# held two drivers does not stop dockerd ("contains several valid graphdrivers").
DOCKERD_CANDIDATES="${ZEDOPS_DOCKERD_CANDIDATES:---storage-driver=overlay2;--storage-driver=overlay2 --iptables=false --bridge=none;--storage-driver=vfs;--storage-driver=vfs --iptables=false --bridge=none}"

T0=$(date +%s%N)
step() { printf '[provision] %s\n' "$*"; }
warn() { printf '[provision] WARNING: %s\n' "$*" >&2; }
die()  { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------------------------------------------
# Probes (shared by --check and provisioning)

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

docker_server_up() { have docker && timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# The python3 the tests will use, resolved through shims (pyenv) to the real interpreter.
# (pyenv shims cost ~0.2 s a call, so resolve once and call the interpreter directly.)
PY="" PY_PREFIX=""
{ read -r PY; read -r PY_PREFIX; } < <(python3 -c 'import sys; print(sys.executable); print(sys.prefix)' 2>/dev/null || true) || true
# Prints the paho-mqtt version if $PY can import paho.mqtt.client, else fails.
paho_version() {
  [ -n "$PY" ] && "$PY" -c 'import paho.mqtt.client, paho.mqtt as p; print(p.__version__)' 2>/dev/null
}

# Python tools of tests/python/ (pip, into $PY). Minor-pinned generator: its output layout changes
# between 0.x minors. The generated client also needs httpx and attrs, which the generator requires.
PIP_TOOLS=('openapi-python-client>=0.29,<0.30' 'openapi-spec-validator>=0.7,<0.10' 'python-dateutil>=2.8,<3' 'schemathesis>=4.3,<5')
# Prints "name version" for each of PIP_TOOLS if $PY has all of them in range and can import what the
# tests import; else prints what is missing or out of range and fails.
pip_tools_status() {
  [ -n "$PY" ] || { echo "no python3 on PATH"; return 1; }
  "$PY" - "${PIP_TOOLS[@]}" <<'PYEOF' 2>&1
import importlib, sys
from importlib.metadata import PackageNotFoundError, version
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
bad, good = [], []
for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        v = version(req.name)
    except PackageNotFoundError:
        bad.append(f"{req.name} not installed"); continue
    if not req.specifier.contains(v, prereleases=True):
        bad.append(f"{req.name} {v} not in {req.specifier}"); continue
    good.append(f"{req.name} {v}")
for mod in ("openapi_python_client", "openapi_spec_validator", "dateutil.parser", "httpx", "attrs", "schemathesis"):
    try:
        importlib.import_module(mod)
    except Exception as e:
        bad.append(f"cannot import {mod}: {e}")
if bad:
    print("; ".join(bad)); sys.exit(1)
print("\n".join(good))
PYEOF
}

# PIDs of processes listening on TCP port 1883 (IPv4 or IPv6).
listeners_1883() {
  if have ss; then
    ss -Hltnp 'sport = :1883' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
  else
    # Without ss: only the Debian service's own pidfile can be identified.
    if (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && [ -s /run/mosquitto/mosquitto.pid ]; then
      cat /run/mosquitto/mosquitto.pid
    fi
  fi
}
port_1883_busy() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }

build_dir=""
cleanup() { if [ -n "$build_dir" ]; then rm -rf "$build_dir"; fi; }
trap cleanup EXIT

# The build context is this Dockerfile plus Debian's /bin/busybox; their hash labels the image.
# shellcheck disable=SC2016  # $! is for the container shell, not this one
DOCKERFILE='FROM scratch
COPY busybox /bin/busybox
# Applet symlinks (/bin/sh, /bin/sleep, ...) plus the few directories programs expect.
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && /bin/busybox mkdir -p /tmp /etc /root /var/tmp && /bin/busybox chmod 1777 /tmp /var/tmp"]
LABEL zedops.test=1
# PID 1 (no --init) ignores SIGTERM unless trapped: exit at once on TERM, so `docker stop` is fast.
CMD ["/bin/busybox", "sh", "-c", "trap '"'"'exit 0'"'"' TERM INT; while true; do echo tick; /bin/busybox sleep 1 & wait $!; done"]
'
image_inputs_hash() {
  { printf '%s' "$DOCKERFILE"; sha256sum /bin/busybox | cut -d' ' -f1; } | sha256sum | cut -c1-16
}
image_label() { docker image inspect -f "{{index .Config.Labels \"$1\"}}" "$IMAGE" 2>/dev/null || true; }
image_current() { [ -x /bin/busybox ] && [ "$(image_label zedops.test.inputs)" = "$(image_inputs_hash)" ]; }

APT_PKGS=(mosquitto mosquitto-clients busybox-static wrk hyperfine python3-paho-mqtt iproute2 systemd openssl postgresql)
missing_pkgs() {
  local p
  for p in "${APT_PKGS[@]}"; do pkg_installed "$p" || echo "$p"; done
  # docker.io only if the tools are missing: never fight an installed docker-ce.
  if ! have docker || { ! docker_server_up && ! have dockerd; }; then
    pkg_installed docker.io || echo docker.io
  fi
  # docker run --init needs docker-init (docker.io ships it as a tini symlink; tini is a dependency).
  if ! docker_server_up && have dockerd && ! have docker-init && ! have tini; then echo tini; fi
}

# ---------------------------------------------------------------------------------------------------
if [ "$MODE" = check ]; then
  ok=1
  miss=$(missing_pkgs | tr '\n' ' ')
  [ -z "$miss" ] || { echo "missing packages: $miss"; ok=0; }
  for c in mosquitto mosquitto_pub mosquitto_sub wrk hyperfine; do have "$c" || { echo "missing command: $c"; ok=0; }; done
  paho_version >/dev/null || { echo "python3 (${PY:-none on PATH}) cannot import paho.mqtt.client"; ok=0; }
  tools=$(pip_tools_status) || { echo "python3 (${PY:-none on PATH}) test tools: $tools"; ok=0; }
  if port_1883_busy; then echo "something listens on 127.0.0.1:1883"; ok=0; fi
  if docker_server_up; then
    image_current || { echo "image $IMAGE missing or stale"; ok=0; }
  else
    echo "docker engine not answering"; ok=0
  fi
  if [ "$ok" = 1 ]; then echo "provisioned: all in place"; exit 0; fi
  exit 1
fi

# ---------------------------------------------------------------------------------------------------
# 1. Packages

wait_for_apt() {
  local deadline=$(( $(date +%s) + 900 )) said=0
  while pgrep -x 'apt|apt-get|dpkg|unattended-upgr' >/dev/null 2>&1; do
    [ "$said" = 1 ] || { step "waiting for another apt/dpkg run to finish"; said=1; }
    [ "$(date +%s)" -lt "$deadline" ] || die "apt/dpkg still busy after 15 min"
    sleep 2
  done
}
apt_run() {
  if ! apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef \
      -o Dpkg::Options::=--force-confold "$@" >>"$APT_LOG" 2>&1; then
    tail -n 30 "$APT_LOG" >&2
    die "apt-get $* failed (full log: $APT_LOG)"
  fi
}

mapfile -t MISSING < <(missing_pkgs)
if [ "${#MISSING[@]}" -gt 0 ]; then
  wait_for_apt
  # The first wait may have let a concurrent install finish what we needed.
  mapfile -t MISSING < <(missing_pkgs)
fi
if [ "${#MISSING[@]}" -gt 0 ]; then
  step "apt-get update"
  apt_run update
  step "apt-get install ${MISSING[*]}"
  apt_run install --no-install-recommends "${MISSING[@]}"
else
  step "packages: all present"
fi

# paho-mqtt for the python3 first on PATH (pyenv here). Debian's python3 gets it from apt above.
[ -n "$PY" ] || die "no python3 on PATH"
if PAHO_VERSION=$(paho_version); then
  step "paho-mqtt: $PAHO_VERSION present for $PY"
elif [ "$PY_PREFIX" = /usr ]; then
  die "python3 ($PY) is Debian's but cannot import paho.mqtt.client although python3-paho-mqtt is installed"
else
  step "pip install paho-mqtt into $PY"
  if ! "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
      'paho-mqtt>=2.1,<3' >>"$APT_LOG" 2>&1; then
    tail -n 20 "$APT_LOG" >&2
    die "pip install paho-mqtt failed for $PY"
  fi
  PAHO_VERSION=$(paho_version) || die "paho-mqtt installed but $PY still cannot import paho.mqtt.client"
fi

# Python test tools (tests/python/) for the same python3: pip only, Debian packages none of them.
if PIP_TOOLS_VERSIONS=$(pip_tools_status); then
  step "python test tools present for $PY: $(tr '\n' ' ' <<<"$PIP_TOOLS_VERSIONS")"
else
  step "pip install ${PIP_TOOLS[*]} into $PY ($PIP_TOOLS_VERSIONS)"
  pip_extra=()
  # Debian's own python3 refuses pip installs into /usr unless told (PEP 668).
  if [ "$PY_PREFIX" = /usr ]; then pip_extra=(--break-system-packages); fi
  if ! "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pip_extra[@]}" \
      "${PIP_TOOLS[@]}" >>"$APT_LOG" 2>&1; then
    tail -n 20 "$APT_LOG" >&2
    die "pip install ${PIP_TOOLS[*]} failed for $PY"
  fi
  PIP_TOOLS_VERSIONS=$(pip_tools_status) || die "python test tools installed but still not usable by $PY: $PIP_TOOLS_VERSIONS"
fi

# ---------------------------------------------------------------------------------------------------
# 2. No broker on 1883: the package's service must not run (policy-rc.d or not).

if [ -x /etc/init.d/mosquitto ] || [ -e /lib/systemd/system/mosquitto.service ]; then
  if have systemctl && [ -d /run/systemd/system ]; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
  else
    service mosquitto stop >/dev/null 2>&1 || true
    update-rc.d mosquitto disable >/dev/null 2>&1 || true
  fi
fi
for pid in $(listeners_1883); do
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = mosquitto ]; then
    step "stopping mosquitto pid $pid listening on 1883"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
done
if port_1883_busy; then
  warn "port 1883 is still in use by something that is not mosquitto: $(ss -Hltnp 'sport = :1883' 2>/dev/null | tr -s ' ' || true)"
else
  step "port 1883: free"
fi

# ---------------------------------------------------------------------------------------------------
# 3. Docker engine

dockerd_pid() {
  local pid
  pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then echo "$pid"; fi
}

wait_docker() { # $1 = pid of the dockerd we are waiting for (may be empty); $2 = deadline (epoch s)
  while :; do
    if docker_server_up && timeout 10 docker info >/dev/null 2>&1; then return 0; fi
    # It died (and no other dockerd took the pidfile): no point waiting.
    if [ -n "$1" ] && ! kill -0 "$1" 2>/dev/null && [ -z "$(dockerd_pid)" ]; then return 1; fi
    [ "$(date +%s)" -lt "$2" ] || return 1
    sleep 0.5
  done
}

ensure_cgroups() {
  # dockerd needs cgroups mounted; a bare VM without systemd may have none.
  if ! grep -q cgroup /proc/mounts; then
    if have cgroupfs-mount; then
      step "mounting cgroups (cgroupfs-mount)"; cgroupfs-mount || true
    else
      step "mounting cgroup2 on /sys/fs/cgroup"; mount -t cgroup2 none /sys/fs/cgroup || true
    fi
  fi
}

DOCKERD_FLAGS_USED="(already running; not started by this script)"
if docker_server_up; then
  step "docker engine: answering ($(docker version --format '{{.Server.Version}}'))"
else
  if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != unix:///var/run/docker.sock ] \
     && [ "${DOCKER_HOST}" != unix:///run/docker.sock ]; then
    die "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local dockerd for it"
  fi
  have dockerd || die "dockerd not found"
  ensure_cgroups
  pid=$(dockerd_pid)
  if [ -n "$pid" ]; then
    step "dockerd pid $pid exists but does not answer yet; waiting up to ${DOCKERD_TIMEOUT}s"
    wait_docker "$pid" $(( $(date +%s) + DOCKERD_TIMEOUT )) \
      || die "dockerd pid $pid does not answer; see $DOCKERD_LOG"
  else
    started=0
    IFS=';' read -r -a candidates <<<"$DOCKERD_CANDIDATES"
    for flags in "${candidates[@]}"; do
      step "starting dockerd $flags (log $DOCKERD_LOG)"
      printf '\n===== %s dockerd %s =====\n' "$(date -Is)" "$flags" >>"$DOCKERD_LOG"
      # shellcheck disable=SC2086  # flags are deliberately word-split
      setsid nohup dockerd --pidfile "$DOCKERD_PIDFILE" $flags </dev/null >>"$DOCKERD_LOG" 2>&1 &
      pid=$!
      if wait_docker "$pid" $(( $(date +%s) + DOCKERD_TIMEOUT )); then
        started=1; DOCKERD_FLAGS_USED="$flags"; break
      fi
      warn "dockerd with '$flags' did not come up: $(grep -E 'level=(fatal|error)|failed to start daemon' "$DOCKERD_LOG" | tail -n 1 | cut -c1-300)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    done
    [ "$started" = 1 ] || die "could not start dockerd with any flag set; see $DOCKERD_LOG"
    disown -a 2>/dev/null || true
  fi
  step "docker engine: up ($(docker version --format '{{.Server.Version}}'))"
fi

# ---------------------------------------------------------------------------------------------------
# 4. Test image

[ -x /bin/busybox ] || die "/bin/busybox missing (busybox-static)"
file_out=$(LC_ALL=C file -b /bin/busybox 2>/dev/null || true)
case "$file_out" in *dynamic*) die "/bin/busybox is dynamically linked; busybox-static is required" ;; esac

if image_current; then
  step "image $IMAGE: up to date"
else
  step "building image $IMAGE (FROM scratch + /bin/busybox)"
  build_dir=$(mktemp -d /tmp/zedops-image.XXXXXX)
  cp /bin/busybox "$build_dir/busybox"
  printf '%s' "$DOCKERFILE" >"$build_dir/Dockerfile"
  if ! out=$(docker build -q --label "zedops.test.inputs=$(image_inputs_hash)" -t "$IMAGE" "$build_dir" 2>&1); then
    printf '%s\n' "$out" >&2
    die "docker build failed"
  fi
  # Drop the image this tag replaced, if nothing uses it.
  docker image prune -f --filter label=zedops.test=1 >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------------------------------------------
# 5. Smoke test: the lifecycle the tests rely on (run --init, logs, pause, stop within grace, restart).

if [ "${ZEDOPS_SKIP_SMOKE:-0}" != 1 ]; then
  name="zedops-provision-smoke-$$"
  docker rm -f "$name" >/dev/null 2>&1 || true
  smoke_fail() { docker logs "$name" 2>&1 | tail -n 5 >&2 || true; docker rm -f "$name" >/dev/null 2>&1 || true; die "smoke test: $*"; }
  docker run -d --init --network none --label zedops.test=1 --name "$name" "$IMAGE" >/dev/null \
    || smoke_fail "docker run --init failed"
  for _ in $(seq 40); do docker logs "$name" 2>&1 | grep -q tick && break; sleep 0.1; done
  docker logs "$name" 2>&1 | grep -q tick || smoke_fail "no logs"
  docker pause "$name" >/dev/null || smoke_fail "docker pause failed (cgroup freezer?)"
  [ "$(docker inspect -f '{{.State.Status}}' "$name")" = paused ] || smoke_fail "not paused"
  docker unpause "$name" >/dev/null || smoke_fail "docker unpause failed"
  s=$(date +%s%N)
  docker stop "$name" >/dev/null || smoke_fail "docker stop failed"
  ms=$(( ($(date +%s%N) - s) / 1000000 ))
  [ "$ms" -lt 3000 ] || smoke_fail "docker stop took ${ms} ms (SIGTERM not honoured?)"
  docker start "$name" >/dev/null || smoke_fail "docker start failed"
  docker kill "$name" >/dev/null || smoke_fail "docker kill failed"
  docker rm -f "$name" >/dev/null
  step "smoke test: run --init, logs, pause/unpause, stop (${ms} ms), start, kill: ok"
fi

# ---------------------------------------------------------------------------------------------------
# Summary

mosq_ver=$( (mosquitto -h 2>&1 || true) | sed -n 's/^mosquitto version \([^ ]*\).*/\1/p' | head -n 1)
printf '[provision] summary:\n'
printf '  docker server   %s (API %s), client %s\n' \
  "$(docker version --format '{{.Server.Version}}')" "$(docker version --format '{{.Server.APIVersion}}')" \
  "$(docker version --format '{{.Client.Version}}' 2>/dev/null || echo '?')"
printf '  storage driver  %s, cgroup %s (%s)\n' "$(docker info --format '{{.Driver}}')" \
  "$(docker info --format '{{.CgroupVersion}}' 2>/dev/null || echo '?')" "$(docker info --format '{{.CgroupDriver}}')"
printf '  dockerd flags   %s\n' "$DOCKERD_FLAGS_USED"
printf '  mosquitto       %s\n' "${mosq_ver:-?}"
printf '  python3         %s, paho-mqtt %s\n' "$PY" "$PAHO_VERSION"
printf '  python tools    %s\n' "$(tr '\n' ' ' <<<"$PIP_TOOLS_VERSIONS")"
printf '  image           %s %s\n' "$IMAGE" "$(docker image inspect -f '{{.Id}}' "$IMAGE")"
el=$(( ($(date +%s%N) - T0) / 1000000 ))
printf '  took            %d.%03d s\n' $(( el / 1000 )) $(( el % 1000 ))
