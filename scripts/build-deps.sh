#!/usr/bin/env bash
# Install the Debian packages the Rust build needs, where missing: isal-sys
# builds ISA-L's igzip (src/archive/gzip_writer.rs) from its vendored source
# with autotools and nasm.
set -euo pipefail
declare -A need=(
  [nasm]=nasm [autoconf]=autoconf [automake]=automake [libtoolize]=libtool
  [make]=make [cc]=gcc
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "build-deps: missing ${missing[*]} and not root; install them with apt-get" >&2
    exit 1
  fi
  echo "build-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
