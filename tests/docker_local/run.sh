#!/usr/bin/env bash
# Run docker-compose.yml for real on a machine with a Docker engine but no GPU and no image
# registry (this project's development machines). Not part of CI: it needs root, Debian's
# docker.io and debootstrap, and downloads PyTorch (several GB) into the image.
#
#   bash tests/docker_local/run.sh        # prints what it checks; RESULT lines at the end
#
# Stand-ins replace the two images that would be pulled (python:3.12-slim, postgres:16);
# the compose file and our Dockerfile are used as they are, plus compose.cpu.yml.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/tests/docker_local"
work=${WORK:-/tmp/resnet-search-docker}
mkdir -p "$work"
export DOCKER_HOST="unix://$work/docker.sock"

if ! docker info >/dev/null 2>&1; then
  dockerd --data-root "$work/root" --exec-root "$work/exec" --host "$DOCKER_HOST" \
          --pidfile "$work/docker.pid" >"$work/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
mkdir -p ~/.docker/cli-plugins
ln -sf "$("$repo/.venv/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')" \
   ~/.docker/cli-plugins/docker-compose

if ! docker image inspect local/debian:bookworm >/dev/null 2>&1; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  [ -d "$work/rootfs/etc" ] || debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror"
  tar -C "$work/rootfs" -c . | docker import - local/debian:bookworm
fi
cp /etc/ssl/certs/ca-certificates.crt "$here/host-ca.crt"
docker build -q --network host -t python:3.12-slim -f "$here/python.Dockerfile" "$here"
docker build -q --network host -t postgres:16 -f "$here/postgres.Dockerfile" "$here"
rm -f "$here/host-ca.crt"

export CIFAR_DIR="$work/cifar10"
[ -f "$CIFAR_DIR/cifar-10-batches-py/test_batch" ] || \
  "$repo/.venv/bin/python" "$repo/../shared/tools/cifar10_batches.py" "$CIFAR_DIR" --train-per-class 100 --test-per-class 20
export POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-local-test} STUDY=docker-local BUDGET=1000000 EPOCHS=2 N_TRIALS=4 PER_GPU=1 DASHBOARD_PORT=${DASHBOARD_PORT:-18080} POSTGRES_PORT=${POSTGRES_PORT:-15432}
compose=(docker compose -p resnet-search-local --project-directory "$repo" -f "$repo/docker-compose.yml" -f "$here/compose.cpu.yml")

"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true   # a clean start every time
trap '"${compose[@]}" logs --no-color > "$work/compose.log" 2>&1; "${compose[@]}" down -v >/dev/null 2>&1' EXIT
"${compose[@]}" build
"${compose[@]}" up -d
status() { "${compose[@]}" run --rm -T worker search status --study "$STUDY" --json; }
for _ in $(seq 120); do
  trained=$(status 2>/dev/null | python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(c["complete"]+c["pruned"])' || echo 0)
  [ "$trained" -ge "$N_TRIALS" ] && break
  sleep 10
done
"${compose[@]}" ps -a
echo "RESULT status:"; "${compose[@]}" run --rm -T worker search status --study "$STUDY"
echo "RESULT dashboard /api/studies:"; curl -s "http://127.0.0.1:$DASHBOARD_PORT/api/studies" | head -c 300; echo
"${compose[@]}" run --rm -T --user "$(id -u):$(id -g)" -v "$work:/out" worker search export-best --study "$STUDY" --out /out/best.pt --evaluate \
  && echo "RESULT export-best: ok"
"${compose[@]}" stop
echo "RESULT after stop:"; "${compose[@]}" run --rm -T worker search status --study "$STUDY" | head -3
