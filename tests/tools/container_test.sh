#!/usr/bin/env bash
# The container check behind `make container-test`: builds docker/Dockerfile
# with podman, runs docker/compose.yaml with podman-compose, and checks that
#   - every instance's HEALTHCHECK (the image's own) passes, and /healthz
#     answers on each published port;
#   - each instance sees a quorum of 3/3 trusted lock nodes (/api/v1/cluster);
#   - a job firing every 5 seconds is delivered once per slot at the receiver.
#
#   tests/tools/container_test.sh WORK_DIR
#
# No registry is reachable on the CI machines, so the Debian 12 base image is
# made by debootstrap from the machine's Debian mirror and cached in WORK_DIR
# (debian-12.tar), then imported as localhost/debian:12 (and :12-slim). podman
# runs with WORK_DIR/containers.conf: runc (crun fails on the rlimits and on a
# hybrid cgroup) and nofile/nproc limits of 20000. Images are built in the
# docker format, which keeps HEALTHCHECK. Everything the compose project made
# (containers, volumes, network) is removed at the end, pass or fail.
set -euo pipefail

work=$(realpath -m "${1:?usage: container_test.sh WORK_DIR}")
repo=$(cd "$(dirname "$0")/../.." && pwd)
project=cronfence-container-test
compose_file=$repo/docker/compose.yaml
mkdir -p "$work"

export CONTAINERS_CONF=$work/containers.conf
export BUILDAH_FORMAT=docker
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]

[engine]
runtime = "runc"
EOF

say() { printf 'container-test: %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }

for tool in podman podman-compose runc debootstrap curl python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done

# ---- the base image ----
if ! podman image exists localhost/debian:12; then
    tarball=$work/debian-12.tar
    if [ ! -s "$tarball" ]; then
        mirror=$(sed -n 's/^URIs: *\(\S*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources \
            2>/dev/null | head -1)
        mirror=${mirror:-http://deb.debian.org/debian}
        say "making the Debian 12 base with debootstrap from $mirror"
        rm -rf "$work/rootfs"
        debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
            || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
        tar -C "$work/rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$work/rootfs"
    fi
    podman import -q "$tarball" localhost/debian:12 >/dev/null
    podman tag localhost/debian:12 localhost/debian:12-slim
fi

# ---- the compose project ----
CRONFENCE_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
CRONFENCE_VIEWER_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
CRONFENCE_SIGNING_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export CRONFENCE_ADMIN_TOKEN CRONFENCE_VIEWER_TOKEN CRONFENCE_SIGNING_SECRET
# Free loopback ports for the three instances (the defaults may be taken).
read -r PUBLISHED_PORT_1 PUBLISHED_PORT_2 PUBLISHED_PORT_3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
export PUBLISHED_PORT_1 PUBLISHED_PORT_2 PUBLISHED_PORT_3
compose() { podman-compose -p "$project" -f "$compose_file" "$@"; }

cleanup() {
    compose down -v >"$work/down.log" 2>&1 || true
    podman volume ls -q --filter "label=io.podman.compose.project=$project" \
        | xargs -r podman volume rm -f >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Without the tokens compose must refuse to start (no well-known fallback).
if env -u CRONFENCE_ADMIN_TOKEN podman-compose -p "$project" -f "$compose_file" config \
        >"$work/no-token.log" 2>&1; then
    fail "compose.yaml started without CRONFENCE_ADMIN_TOKEN"
fi
say "compose refuses to start without CRONFENCE_ADMIN_TOKEN"

started=$SECONDS
say "building the image and starting docker/compose.yaml (log: $work/up.log)"
compose up -d --build >"$work/up.log" 2>&1 || { tail -40 "$work/up.log"; fail "compose up"; }
say "built and started in $((SECONDS - started)) s"

container() {
    podman ps -a --filter "label=io.podman.compose.project=$project" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -1
}

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local bound=$1 deadline
    shift
    deadline=$((SECONDS + bound))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 2
    done
}

api() { # api PORT PATH [curl args...]
    local port=$1 path=$2
    shift 2
    curl -fsS --max-time 10 -H "Authorization: Bearer $CRONFENCE_ADMIN_TOKEN" \
        "http://127.0.0.1:$port$path" "$@"
}

trusted_quorum() {
    api "$1" /api/v1/cluster | python3 -c '
import json, sys
quorum = json.load(sys.stdin)["quorum"]
sys.exit(0 if quorum["trusted"] == quorum["size"] == 3 else 1)'
}

ports=("$PUBLISHED_PORT_1" "$PUBLISHED_PORT_2" "$PUBLISHED_PORT_3")
for i in 1 2 3; do
    name=$(container "cronfence-$i")
    [ -n "$name" ] || fail "no container for cronfence-$i"
    # podman runs health checks from systemd timers, absent here: run the image's check.
    wait_for 120 podman healthcheck run "$name" \
        || { podman logs "$name" | tail -20; fail "cronfence-$i: the image's HEALTHCHECK fails"; }
    curl -fsS --max-time 10 -o /dev/null "http://127.0.0.1:${ports[i-1]}/healthz" \
        || fail "cronfence-$i: /healthz on the published port"
    wait_for 120 trusted_quorum "${ports[i-1]}" || fail "cronfence-$i: no quorum of 3 trusted nodes"
    say "cronfence-$i healthy (HEALTHCHECK and /healthz), 3/3 trusted lock nodes"
done

api "$PUBLISHED_PORT_1" /api/v1/jobs -o /dev/null -H 'Content-Type: application/json' \
    -d '{"name": "container-check", "schedule": "*/5 * * * * *",
         "webhook": {"url": "http://cronfence-receiver:9090/hook"}}' \
    || fail "cannot create the job"

receiver=$(container cronfence-receiver)
deliveries() { podman exec "$receiver" cat /var/lib/cronfence/deliveries.jsonl 2>/dev/null || true; }
slots_delivered() {
    deliveries | python3 -c '
import collections, json, sys
lines = [json.loads(l) for l in sys.stdin if l.strip()]
slots = collections.Counter(l["scheduled_at"] for l in lines if l["job"] == "container-check")
sys.exit(0 if len(slots) >= int(sys.argv[1]) else 1)' "$1"
}
wait_for 120 slots_delivered 4 || { deliveries; fail "fewer than 4 slots delivered in 120 s"; }
deliveries | python3 -c '
import collections, json, sys
lines = [json.loads(l) for l in sys.stdin if l.strip()]
slots = collections.Counter(l["scheduled_at"] for l in lines if l["job"] == "container-check")
twice = {slot: n for slot, n in slots.items() if n != 1}
instances = sorted({l["instance"] for l in lines})
print(f"container-test: {len(slots)} slots delivered, each once; fired by {instances}")
sys.exit(1 if twice else 0)' || fail "a slot was delivered more than once"
say "passed in $((SECONDS - started)) s after the base image"
