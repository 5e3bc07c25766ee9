#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks need, where missing.
set -euo pipefail
exec bash "$(dirname "$0")/need.sh" system-deps \
  debootstrap=debootstrap mkfs.xfs=xfsprogs mkfs.ext4=e2fsprogs \
  getfattr=attr setfacl=acl unshare=util-linux tar=tar \
  setpriv=util-linux cp=coreutils dockerd=docker.io \
  skopeo=skopeo umoci=umoci setcap=libcap2-bin \
  chromium=chromium chromedriver=chromium-driver \
  docker-registry=docker-registry htpasswd=apache2-utils openssl=openssl zstd=zstd
