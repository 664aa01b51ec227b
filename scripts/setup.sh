#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for pytest-qemu, and is safe to run again:
# - QEMU for x86-64 and Arm, the host's kernel, busybox-static and C compilers
#   (the guest agent is compiled for each architecture) from apt, and mmdebstrap
#   and e2fsprogs, which build the Debian test image (pytest_qemu/images/), and
#   syslinux, mtools and dosfstools, which make a disk that boots by itself;
# - nothing foreign: the first aarch64 VM downloads Debian's arm64 kernel and
#   busybox through a private apt configuration (the host's apt is never changed;
#   `python -m pytest_qemu fetch --arch all` does it ahead);
# - .venv with the package and its test tools.
set -euo pipefail

cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

packages=(
    qemu-system-x86 qemu-system-arm qemu-utils linux-image-amd64 busybox-static kmod
    python3-venv gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross gdb
    mmdebstrap e2fsprogs syslinux mtools dosfstools
)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: done; run tests with .venv/bin/pytest"
