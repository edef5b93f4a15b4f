#!/usr/bin/env bash
# Build the image and bring the compose stack up with podman (no Docker engine needed), then call /ready and
# /estimate on it. Needs: apt-get install podman buildah debootstrap docker-compose
# Base images cannot be pulled on air-gapped hosts, so a Debian bookworm + Python base is built with debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTFS=${ROOTFS:-/var/tmp/daa-rootfs}
BASE=${BASE_IMAGE:-localhost/daa-base:bookworm}
PORT=${DAA_PUBLISH_PORT:-8000}

if ! podman image exists "$BASE"; then
  if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates bookworm "$ROOTFS"
  fi
  # A "python" on PATH and pip allowed to install into the image's system Python, like the official images.
  chroot "$ROOTFS" sh -c 'ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip \
    && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED'
  tar -C "$ROOTFS" -c . | podman import - "$BASE"
fi

podman system service --time=0 "unix:///tmp/podman-daa.sock" &
SERVICE_PID=$!
trap 'docker-compose down >/dev/null 2>&1 || true; kill $SERVICE_PID 2>/dev/null || true' EXIT
export DOCKER_HOST=unix:///tmp/podman-daa.sock
sleep 2

# pip inside the build needs the host's CA bundle when the network is the host's.
export BASE_IMAGE="$BASE" TORCH_INDEX_URL="${TORCH_INDEX_URL-}"
podman build --network=host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
  -f docker/Dockerfile -t daa-age:cpu .
docker-compose config -q
docker-compose up -d --no-build daa

for i in $(seq 1 90); do
  if curl -fsS "http://127.0.0.1:$PORT/ready"; then echo; break; fi
  sleep 2
done
curl -fsS -F file=@tests/fixtures/astronaut.jpg "http://127.0.0.1:$PORT/estimate?reference_interval=20" | head -c 600
echo
docker-compose ps
