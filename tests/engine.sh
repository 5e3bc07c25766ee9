#!/usr/bin/env bash
# The project's own Docker engine (tests/support/engine.py) from a shell:
#   tests/engine.sh start | stop [--force] | status | env | exec CMD... | base-image
# It needs only the standard library, so any python3 runs it.
set -euo pipefail
tests=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$tests${PYTHONPATH:+:$PYTHONPATH}"
py=${PY:-$(test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)}
exec "$py" -m support.engine "$@"
