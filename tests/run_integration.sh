#!/usr/bin/env bash
# The privileged test container: pytest tests/integration runs as pid 1's
# child in its own mount and pid namespaces with private propagation, so no
# mount a test makes can reach the host, even if the test or pytest crashes.
#
# The host's mount table stays readable inside through fd 9 (a mountinfo file
# opened here, before unshare, keeps reading the host's namespace), so a test
# can prove that nothing leaked out.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec 9</proc/self/mountinfo
export LAMINA_HOST_MOUNTINFO_FD=9
exec unshare --mount --pid --fork --propagation private --mount-proc -- \
  "$PY" tests/container_init.py "${@:-tests/integration}"
