#!/usr/bin/env bash
# Build an image and run it with podman (no Docker engine needed), then call /ready and /estimate on it.
#   bash docker/smoke.sh          the CPU image (no torch), brought up with compose as `docker compose up` does
#   TARGET=gpu bash docker/smoke.sh   the torch image, run on the CPU here (DAA_DEVICE=cpu; no GPU needed)
# Needs: apt-get install podman buildah debootstrap docker-compose
# Base images cannot be pulled on air-gapped hosts, so a Debian bookworm + Python base is built with debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTFS=${ROOTFS:-/var/tmp/daa-rootfs}
BASE=${BASE_IMAGE:-localhost/daa-base:bookworm}
PORT=${DAA_PUBLISH_PORT:-8000}
TARGET=${TARGET:-cpu}

if ! podman image exists "$BASE"; then
  if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates bookworm "$ROOTFS"
  fi
  # A "python" on PATH and pip allowed to install into the image's system Python, like the official images.
  chroot "$ROOTFS" sh -c 'ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip \
    && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED'
  # pip in the build uses the host's network, so it needs the host's CA bundle.
  cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  # What the official slim images leave out: apt's caches and lists, documentation, man pages and translations.
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* "$ROOTFS"/usr/share/info/*
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$ROOTFS/etc/pip.conf"
  tar -C "$ROOTFS" -c . | podman import - "$BASE"
fi

# Sandboxes without a full cgroup v2 hierarchy: crun refuses ("cgroups in hybrid mode not supported"), so run
# containers with runc and cgroupfs, build with chroot isolation, and cap the ulimits podman may not raise.
CONF=$(mktemp)
printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' > "$CONF"
export CONTAINERS_CONF="$CONF"

podman system service --time=0 "unix:///tmp/podman-daa.sock" &
SERVICE_PID=$!
trap 'docker-compose down >/dev/null 2>&1 || true; podman rm -f daa-smoke-gpu >/dev/null 2>&1 || true; kill $SERVICE_PID 2>/dev/null || true' EXIT
export DOCKER_HOST=unix:///tmp/podman-daa.sock
sleep 2

# pip inside the build needs the host's CA bundle when the network is the host's.
export BASE_IMAGE="$BASE" TORCH_INDEX_URL="${TORCH_INDEX_URL-}"
# Hosts that keep wheels on local disk (PIP_FIND_LINKS) lend them to the build read-only.
# (as a build argument: the Dockerfile's ARG is seen by RUN and not kept in the image's environment).
WHEELS=()
if [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
  WHEELS=(-v "$PIP_FIND_LINKS:$PIP_FIND_LINKS:ro" --build-arg "PIP_FIND_LINKS=$PIP_FIND_LINKS")
fi
# --format docker: podman's default OCI format drops the Dockerfile's HEALTHCHECK.
podman build --format docker --isolation=chroot --network=host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "${WHEELS[@]}" \
  --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
  -f docker/Dockerfile --target "$TARGET" -t "daa-age:$TARGET" .
docker-compose config -q
if [ "$TARGET" = cpu ]; then
  docker-compose up -d --no-build daa
  CONTAINER=$(docker-compose ps -q daa)
else
  # compose's daa-gpu service reserves an NVIDIA device; the same image on the CPU proves the torch path.
  CONTAINER=$(podman run -d --name daa-smoke-gpu -e DAA_DEVICE=cpu -p "$PORT:8000" "daa-age:$TARGET")
fi

for i in $(seq 1 90); do
  if curl -fsS "http://127.0.0.1:$PORT/ready"; then echo; break; fi
  sleep 2
done
curl -fsS -F file=@tests/fixtures/astronaut.jpg "http://127.0.0.1:$PORT/estimate?reference_interval=20" | head -c 600
echo
# The container's own healthcheck must pass too (compose's CMD-SHELL form). podman schedules healthchecks with
# systemd timers, which a sandbox without systemd lacks, so run the check here: the same command, same container.
for i in $(seq 1 40); do
  podman healthcheck run "$CONTAINER" >/dev/null 2>&1 || true
  STATUS=$(podman inspect --format '{{.State.Health.Status}}' "$CONTAINER" 2>/dev/null || echo unknown)
  [ "$STATUS" = healthy ] && break
  sleep 3
done
echo "health: $STATUS"
[ "$TARGET" = cpu ] && docker-compose ps
podman exec "$CONTAINER" python -c "import importlib.util as u; print('torch installed:', u.find_spec('torch') is not None)"
podman image inspect "daa-age:$TARGET" --format 'image size: {{.Size}} bytes'
podman image inspect "daa-age:$TARGET" --format '{{.Config.Env}}' | grep -q PIP_FIND_LINKS && { echo "PIP_FIND_LINKS leaked"; exit 1; }
[ "$STATUS" = healthy ]
