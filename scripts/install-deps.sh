#!/usr/bin/env bash
# install-deps.sh - installs the Debian packages Tongyun builds with, only those that are missing, so it is safe to
# run on every `make`; with --test (make test) also those only the tests need. Runs apt-get as root, or through sudo
# when that is available.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev libjansson-dev libutf8proc-dev libpcre2-dev libevent-dev libsqlite3-dev libssl-dev python3 python3-venv gzip)
# tests on x86-64: a cross compiler and qemu, so that the suite also runs the NEON kernels, and SIMDe, so that it
# runs the AVX-512 ones in portable C on hosts without AVX-512 (CMakeLists.txt)
if [ "${1:-}" = --test ] && [ "$(uname -m)" = x86_64 ]; then
    pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libsimde-dev)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
