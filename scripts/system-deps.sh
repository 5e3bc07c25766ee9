#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks need, where missing.
set -euo pipefail
declare -A need=(
  [debootstrap]=debootstrap [mkfs.xfs]=xfsprogs [mkfs.ext4]=e2fsprogs
  [getfattr]=attr [setfacl]=acl [unshare]=util-linux [tar]=tar
  [setpriv]=util-linux [cp]=coreutils [dockerd]=docker.io
  [skopeo]=skopeo [umoci]=umoci [setcap]=libcap2-bin
  [chromium]=chromium [chromedriver]=chromium-driver
  [docker-registry]=docker-registry [htpasswd]=apache2-utils [openssl]=openssl
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 \
    || missing+=("${need[$cmd]}")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing ${missing[*]} and not root; install them with apt-get" >&2
    exit 1
  fi
  echo "system-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
