#!/usr/bin/env bash
# Install the Debian packages the Rust build needs, where missing: isal-sys
# builds ISA-L's igzip (src/archive/gzip_writer.rs) from its vendored source
# with autotools and nasm.
set -euo pipefail
exec bash "$(dirname "$0")/need.sh" build-deps \
  nasm=nasm autoconf=autoconf automake=automake libtoolize=libtool \
  make=make cc=gcc
