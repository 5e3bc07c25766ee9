#!/usr/bin/env bash
# Run the integration suite inside a real Docker container, started the way
# this VM allows (`--privileged` asks for a capability it lacks).
#
# The engine is the project's own (tests/support/engine.py): dockerd in mount,
# network and pid namespaces of its own, data root in the test cache, socket
# under /run/lamina-docker; started for this run if none runs, and stopped
# afterwards if this run started it. Bind sources (`-v`) resolve in the
# engine's mount namespace, a copy of the host's, so host paths work.
#
# No image can be pulled, so the image is made with `docker import`: an empty
# root whose /bin, /lib, ... point into the host's /usr, which is bind-mounted
# read-only along with /etc, the checkout and the test cache. The engine's run
# dir is bind-mounted too, so the suite inside uses the same engine (a lease
# on it, never a second dockerd on its data root); the cache is mounted
# without its submounts, so the engine's overlay mounts stay out.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
command -v docker >/dev/null || { echo "test-docker: no docker client (apt-get install docker.io)" >&2; exit 1; }
if [ "${1:-}" != --in-engine ]; then
  exec bash tests/engine.sh exec -- bash tests/run_docker.sh --in-engine "$@"
fi
shift
image=$(bash tests/engine.sh base-image)
cache=${LAMINA_TEST_CACHE:-/var/tmp/lamina-test-cache}
eval "$(bash tests/engine.sh env)"
mkdir -p "$cache"
docker run --rm --cap-add ALL --cap-drop SYS_RESOURCE \
  --security-opt apparmor=unconfined --security-opt seccomp=unconfined \
  -v /usr:/usr:ro -v /etc:/etc:ro -v "$repo:$repo" \
  --mount "type=bind,source=$cache,target=$cache,bind-nonrecursive=true" \
  -v "$LAMINA_ENGINE_RUN:$LAMINA_ENGINE_RUN" \
  -e LAMINA_TEST_CACHE="$cache" -w "$repo" "$image" \
  bash tests/run_integration.sh "$@"
