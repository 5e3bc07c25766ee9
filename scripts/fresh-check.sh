#!/usr/bin/env bash
# Check a change the way CI sees it on a fresh machine:
#
#   bash scripts/fresh-check.sh [REF]        # REF: branch or commit, default main
#
# 1. stops the Docker engine the project started (tests/engine.sh stop: its
#    init and pid namespace, and any dockerd left on its data root);
# 2. removes the project's test caches (debootstrap rootfs, docker fixtures,
#    the engine's data root) and the engine's run dir, lazily unmounting
#    first anything still mounted under them;
# 3. removes what earlier versions of the tests left in the system's Docker
#    engine: `lamina-test-*` images through a running system engine, or, when
#    no dockerd runs on it, /var/lib/docker itself, but only if
#    scripts/docker_leftovers.py proves that everything in it is the tests'
#    (a user's Docker data is never touched);
# 4. clones REF's committed state into a fresh directory on a tmpfs, runs
#    `bash .ci/run` there with no LAMINA_*/DOCKER_* (or venv, cargo target,
#    make) variables leaking in, and reports pass/fail and the elapsed time;
# 5. checks that the run left no engine process and no mount on the host, and
#    removes the clone.
#
# It needs root, and it removes the test cache every run on this machine
# shares: it waits for test runs in progress to finish first.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ref=${1:-main}
[ "$(id -u)" = 0 ] || { echo "fresh-check: needs root" >&2; exit 1; }
src=$(git -C "$here" rev-parse --path-format=absolute --git-common-dir)
sha=$(git -C "$here" rev-parse --verify --quiet "$ref^{commit}") \
  || { echo "fresh-check: no commit '$ref' in $src" >&2; exit 1; }
py=$(test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
say() { printf 'fresh-check: %s\n' "$*"; }

# Mount points (unescaped) under $1 in the host's table, deepest first.
mounts_under() {
  "$py" - "$1" <<'EOF'
import sys
root = sys.argv[1].rstrip("/")
with open("/proc/self/mountinfo") as f:
    points = [line.split()[4].encode().decode("unicode_escape") for line in f]
for p in sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True):
    print(p)
EOF
}

unmount_under() {
  local m
  while IFS= read -r m; do
    [ -n "$m" ] || continue
    say "lazy-unmounting stale $m"
    umount -l "$m"
  done < <(mounts_under "$1")
}

# Test runs in progress share the cache removed below: let them finish.
runs_in_progress() { pgrep -f '(^|/)python[0-9.]* tests/container_init\.py' || true; }
waited=0
while [ -n "$(runs_in_progress)" ]; do
  if [ "$waited" = 0 ]; then say "waiting for test runs in progress: $(runs_in_progress | tr '\n' ' ')"; fi
  if [ "$waited" -ge 1800 ]; then say "FAIL: test runs still in progress after 30 min"; exit 1; fi
  sleep 10; waited=$((waited + 10))
done

# 1-2. The project's engine and caches: the default cache (what the clean run
# below uses) and $LAMINA_TEST_CACHE if it names another.
caches=(/var/tmp/lamina-test-cache)
if [ -n "${LAMINA_TEST_CACHE:-}" ] && [ "$(realpath -m "$LAMINA_TEST_CACHE")" != /var/tmp/lamina-test-cache ]; then
  caches+=("$(realpath -m "$LAMINA_TEST_CACHE")")
fi
for cache in "${caches[@]}"; do
  LAMINA_TEST_CACHE=$cache bash "$here/tests/engine.sh" stop --force
  eval "$(LAMINA_TEST_CACHE=$cache bash "$here/tests/engine.sh" env)"
  for dir in "$cache" "$LAMINA_ENGINE_RUN"; do
    if [ -e "$dir" ]; then
      unmount_under "$dir"
      say "removing $dir"
      rm -rf --one-file-system "$dir"
    fi
  done
done
unset DOCKER_HOST LAMINA_ENGINE_RUN LAMINA_ENGINE_DATA_ROOT LAMINA_ENGINE_LOG

# 3. What earlier versions of the tests left in the system's engine.
if command -v docker >/dev/null 2>&1 && env -u DOCKER_HOST -u DOCKER_CONTEXT docker info >/dev/null 2>&1; then
  imgs=$(env -u DOCKER_HOST -u DOCKER_CONTEXT docker images --format '{{.Repository}}:{{.Tag}}' \
    | grep '^lamina-test-' || true)
  if [ -n "$imgs" ]; then
    say "removing from the system engine: $(echo $imgs)"
    # shellcheck disable=SC2086
    env -u DOCKER_HOST -u DOCKER_CONTEXT docker rmi $imgs >/dev/null
  fi
elif [ -d /var/lib/docker ]; then
  # A dockerd on the default data root: one without --data-root, or with it.
  system=$(pgrep -a -x dockerd | grep -v -- '--data-root' || true)
  system+=$(pgrep -a -x dockerd | grep -E -- '--data-root[= ]/var/lib/docker( |$)' || true)
  if [ -n "$system" ]; then
    say "left /var/lib/docker alone: a dockerd uses it but does not answer"
  elif verdict=$("$py" "$here/scripts/docker_leftovers.py" /var/lib/docker); then
    unmount_under /var/lib/docker
    say "removing /var/lib/docker (only lamina-test-* images, made by earlier test runs)"
    rm -rf --one-file-system /var/lib/docker
  else
    say "left /var/lib/docker alone: $verdict"
  fi
fi

# 4. A fresh clone, run as CI runs it. Heavy trees (target/, .venv) go on a
# tmpfs when one that allows executables is at hand.
base=${TMPDIR:-/tmp}
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && ! grep -qE '^[^ ]+ /dev/shm [^ ]+ [^ ]*noexec' /proc/mounts; then
  base=/dev/shm
fi
work=$(mktemp -d "$base/lamina-fresh.XXXXXX")
chmod 0755 "$work"  # as a CI workspace: tests run as nobody need a way in
log=$(mktemp "${TMPDIR:-/tmp}/lamina-fresh-check.XXXXXX.log")
cleanup() {
  unmount_under "$work"
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
git clone --quiet --no-checkout "$src" "$work/lamina"
git -C "$work/lamina" checkout --quiet --detach "$sha"
say "running .ci/run on $ref (${sha:0:12}) in $work/lamina; log: $log"

clean=()
while IFS= read -r var; do
  case "$var" in
    LAMINA_* | DOCKER_* | VIRTUAL_ENV | CARGO_TARGET_DIR | PY | PYTHON | PYTHONPATH | \
      MAKEFLAGS | MFLAGS | MAKELEVEL | MAKEOVERRIDES) clean+=(-u "$var") ;;
  esac
done < <(compgen -e)
mount_points() { awk '{print $5}' /proc/self/mountinfo | sort; }
mounts_before=$(mount_points)
start=$(date +%s)
set +e
(cd "$work/lamina" && env "${clean[@]}" bash .ci/run) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - start))

# 5. Nothing left behind: no engine process, no new mount on the host.
eval "$(env -u LAMINA_TEST_CACHE bash "$here/tests/engine.sh" env)"
left=$(pgrep -a -f -- "--data-root $LAMINA_ENGINE_DATA_ROOT|$LAMINA_ENGINE_RUN/exec|support\.engine_init" || true)
if [ -n "$left" ]; then
  say "engine processes left running:"; echo "$left"
  if [ "$rc" = 0 ]; then rc=1; fi
fi
new_mounts=$(comm -13 <(echo "$mounts_before") <(mount_points))
if [ -n "$new_mounts" ]; then
  say "mounts left on the host:"; echo "$new_mounts"
  if [ "$rc" = 0 ]; then rc=1; fi
fi
if [ "$rc" = 0 ]; then
  say "PASS: ${sha:0:12} ($ref) in ${elapsed} s"
else
  say "FAIL (exit $rc): ${sha:0:12} ($ref) after ${elapsed} s; log: $log"
fi
exit "$rc"
