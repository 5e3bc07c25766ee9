#!/usr/bin/env bash
# Run tests/unit as an unprivileged user (uid nobody, no capabilities).
#
# The suite runs from a world-readable staging copy of python/ and tests/,
# because the checkout itself (and the venv's pytest) may sit under a 0700
# directory such as /root or a mktemp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  exec .venv/bin/python -m pytest -q tests/unit   # already unprivileged
fi
USER_ID=${LAMINA_UNPRIV_USER:-nobody}
PYTHON=$(readlink -f .venv/bin/python)
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stage=$(mktemp -d /tmp/lamina-unpriv.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/site"
cp -a python/lamina tests README.md examples "$stage/"
# pytest and its dependencies, without the editable lamina install.
for d in "$SITE"/*; do
  case "$(basename "$d")" in lamina*|_lamina*|*.pth|maturin*) ;; *) cp -a "$d" "$stage/site/" ;; esac
done
chmod -R a+rX "$stage"
cd "$stage"
setpriv --reuid="$USER_ID" --regid="$(id -g "$USER_ID")" --clear-groups \
  --inh-caps=-all --bounding-set=-all --no-new-privs \
  env -i PATH=/usr/bin:/bin HOME="$stage" TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1 \
  PYTHONPATH="$stage:$stage/site" LAMINA_UNPRIVILEGED_RUN=1 \
  "$PYTHON" -m pytest -q -p no:cacheprovider -c /dev/null --rootdir "$stage" tests/unit
