#!/usr/bin/env bash
# Run the integration suite inside a real Docker container, started the way
# this VM allows (`--privileged` asks for a capability it lacks).
#
# No image can be pulled, so the image is made with `docker import`: an empty
# root whose /bin, /lib, ... point into the host's /usr, which is bind-mounted
# read-only along with /etc, the checkout and the test cache.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
command -v docker >/dev/null || { echo "test-docker: no docker client (apt-get install docker.io)" >&2; exit 1; }
if ! docker info >/dev/null 2>&1; then
  echo "test-docker: starting dockerd"
  (dockerd >/tmp/lamina-dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
image=lamina-test-base:1
if ! docker image inspect "$image" >/dev/null 2>&1; then
  stage=$(mktemp -d)
  mkdir -p "$stage"/{usr,etc,tmp,var/tmp,proc,sys,dev,root}
  for l in bin sbin lib lib64; do ln -s "usr/$l" "$stage/$l"; done
  tar -C "$stage" -c . | docker import - "$image" >/dev/null
  rm -rf "$stage"
fi
cache=${LAMINA_TEST_CACHE:-/var/tmp/lamina-test-cache}
mkdir -p "$cache"
exec docker run --rm --cap-add ALL --cap-drop SYS_RESOURCE \
  --security-opt apparmor=unconfined --security-opt seccomp=unconfined \
  -v /usr:/usr:ro -v /etc:/etc:ro -v "$repo:$repo" -v "$cache:$cache" \
  -e LAMINA_TEST_CACHE="$cache" -w "$repo" "$image" \
  bash tests/run_integration.sh "$@"
