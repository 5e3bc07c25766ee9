#!/usr/bin/env bash
# Install, with apt-get, the Debian packages whose commands are missing:
#   bash scripts/need.sh LABEL cmd=package ...
# A second run only checks. Installing needs root.
set -euo pipefail
label=$1
shift
missing=()
for pair in "$@"; do
  cmd=${pair%%=*}
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 \
    || missing+=("${pair#*=}")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "$label: missing ${missing[*]} and not root; install them with apt-get" >&2
    exit 1
  fi
  echo "$label: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
