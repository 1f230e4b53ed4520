#!/usr/bin/env bash
# make deploy-check: build durapipe's image from deploy/Dockerfile, bring up deploy/compose.yaml
# (with the substitutions of deploy/compose.check.yaml), run `brief` through it end to end, check
# the read-only root file system, the stores' volume and the metrics probes, and tear it all down.
#
# Podman (Debian's packages) as root, adjusted for machines without image registries: runc, the
# host's ulimits (CONTAINERS_CONF), a Debian base made with debootstrap, the host's CA bundle for
# pip inside the build, podman-compose from PyPI, host networking on 127.0.0.1.
# Needs: podman runc debootstrap fuse-overlayfs uidmap slirp4netns (apt) and podman-compose (pip).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/.venv/bin}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/debian-base:bookworm
began=$(date +%s)
say() { echo "deploy-check [$(($(date +%s) - began))s]: $*" >&2; }

WORK=$(mktemp -d /tmp/durapipe-deploy-check.XXXXXX)
export CONTAINERS_CONF=$WORK/containers.conf
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

free_port() { "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for port in 8081 9464 9465 9466; do  # fixed in compose.yaml; host networking shares them
  if "$BIN/python" -c "import socket, sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
    echo "deploy-check: port $port on 127.0.0.1 is in use; the check's services need it" >&2
    exit 2
  fi
done

export CHECK_TEMPORAL_PORT=${CHECK_TEMPORAL_PORT:-$(free_port)}
export DURAPIPE_SECRETS=$WORK/secrets
export POSTGRES_PASSWORD=check-$RANDOM$RANDOM
export DURAPIPE_CODEC_TOKEN=check-$RANDOM$RANDOM
COMPOSE=("$BIN/podman-compose" --project-name durapipe-check -f "$ROOT/deploy/compose.yaml" -f "$ROOT/deploy/compose.check.yaml")

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    say "failed; the services' last words:"
    for name in $(podman ps -a --filter label=io.podman.compose.project=durapipe-check --format '{{.Names}}' 2>/dev/null); do
      echo "--- $name" >&2
      podman logs --tail 15 "$name" >&2 2>&1 || true
    done
  fi
  # The containers first, with their anonymous volumes (the image's VOLUME where no named
  # volume is mounted), which `down -v` leaves behind; then the networks and named volumes.
  for id in $(podman ps -aq --filter label=io.podman.compose.project=durapipe-check 2>/dev/null); do
    podman rm -f -v "$id" >/dev/null 2>&1 || true
  done
  "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
  # Anonymous volumes the check's containers left (none existed before it, by name).
  for volume in $(podman volume ls -q --filter dangling=true 2>/dev/null); do
    grep -qx "$volume" "$WORK/volumes-before" 2>/dev/null || podman volume rm "$volume" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
  say "torn down (exit $status) after $(($(date +%s) - began))s"
}
podman volume ls -q >"$WORK/volumes-before" 2>/dev/null || true
trap cleanup EXIT

# 1. A Debian base image without a registry (kept between checks: it only changes with Debian).
if ! podman image exists "$BASE"; then
  say "building $BASE with debootstrap from $MIRROR"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

# 2. The images: durapipe's from deploy/Dockerfile, and the stand-in for Temporal's.
say "building durapipe-worker:0.1.0 from deploy/Dockerfile"
podman build --quiet --network host \
  -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
  --build-arg BASE="$BASE" --build-arg PIP_CERT=/run/host-ca.crt \
  -f "$ROOT/deploy/Dockerfile" -t durapipe-worker:0.1.0 "$ROOT" >/dev/null
mkdir -p "$WORK/temporal"
cp "$BIN/temporal" "$WORK/temporal/temporal"
podman build --quiet --network host --build-arg BASE="$BASE" \
  -f "$ROOT/deploy/check/temporal.Containerfile" -t localhost/durapipe-check-temporal:latest "$WORK/temporal" >/dev/null

# 3. Secrets, as deploy/README.md says to create them.
mkdir -p "$DURAPIPE_SECRETS"
KEYS=$("$BIN/durapipe" codec-key k1)
echo "$KEYS" >"$DURAPIPE_SECRETS/encryption_keys"
echo "OPENAI_API_KEY=sk-not-used-by-the-offline-model" >"$DURAPIPE_SECRETS/openai.env"
echo "ANTHROPIC_API_KEY=sk-not-used-by-the-offline-model" >"$DURAPIPE_SECRETS/anthropic.env"

# 4. Up, and wait for every worker to poll.
say "compose up (Temporal on 127.0.0.1:$CHECK_TEMPORAL_PORT)"
"${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
for service in worker worker-openai worker-anthropic; do
  deadline=$(($(date +%s) + 300))
  until podman logs "durapipe-check_${service}_1" 2>&1 | grep -q "worker ready"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "deploy-check: $service never became ready" >&2; exit 1; }
    sleep 1
  done
done
say "workers ready"

# 5. The run, from this machine as a client would start it: the workers' key encrypts it.
export TEMPORAL_ADDRESS=127.0.0.1:$CHECK_TEMPORAL_PORT DURAPIPE_ENCRYPTION_KEYS=$KEYS LITELLM_LOCAL_MODEL_COST_MAP=True
export ARTICLE="The council approved the new bridge on Monday. It will cost 40 million dollars."
output=$("$BIN/durapipe" run brief --file "$ROOT/examples/brief.yaml" --json \
  --input article="$ARTICLE" --id deploy-check-brief)
echo "$output" | "$BIN/python" -c '
import json, os, sys
out = json.load(sys.stdin)
assert set(out) == {"claims", "headline", "word_count", "verdict"}, out
assert out["word_count"] == len(os.environ["ARTICLE"].split()), out  # the tool ran in a worker
print("deploy-check: brief ->", sorted(out))' >&2
"$BIN/durapipe" show deploy-check-brief >&2

# 6. What the run proves about the deployment.
for service in worker worker-openai worker-anthropic codec-server setup; do
  readonly_root=$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "durapipe-check_${service}_1")
  [ "$readonly_root" = true ] || { echo "deploy-check: $service's root file system is writable" >&2; exit 1; }
done
podman exec durapipe-check_worker_1 python3 -c 'import os; assert os.path.getsize("/var/lib/durapipe/checkpoints.sqlite") > 0'
for port in 9464 9465 9466; do
  "$BIN/python" -c "import urllib.request as r; assert b'temporal' in r.urlopen('http://127.0.0.1:$port/metrics', timeout=5).read()"
done
say "brief ran end to end; read-only roots, the stores' volume and the metrics probes hold"
