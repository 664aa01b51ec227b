#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for pytest-qemu, and is safe to run again:
# - QEMU for x86-64 and Arm, the host's kernel, busybox-static and C compilers
#   (the guest agent is compiled for each architecture) from apt, and mmdebstrap
#   and e2fsprogs, which build the Debian test image (pytest_qemu/images/), and
#   syslinux, mtools and dosfstools, which make a disk that boots by itself;
# - Debian's arm64 kernel and busybox-static, downloaded (not installed) for
#   aarch64 guests, into ~/.cache/pytest-qemu/foreign-packages/arm64;
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
updated=""
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get"
    $sudo apt-get update -q
    updated=yes
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# aarch64 guests: Debian's arm64 kernel and busybox, downloaded only.
foreign="${PYTEST_QEMU_FOREIGN_PACKAGES:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-qemu/foreign-packages}/arm64"
if ! compgen -G "$foreign/linux-image-[0-9]*.deb" >/dev/null ||
    ! compgen -G "$foreign/busybox-static_*.deb" >/dev/null; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "setup: adding the arm64 architecture to apt (for downloads only)"
        $sudo dpkg --add-architecture arm64
        updated=""
    fi
    [ -n "$updated" ] || $sudo apt-get update -q
    kernel=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/ {print $2; exit}')
    [ -n "$kernel" ] || { echo "setup: no arm64 kernel package found" >&2; exit 1; }
    echo "setup: downloading $kernel and busybox-static:arm64 into $foreign"
    mkdir -p "$foreign"
    (cd "$foreign" && rm -f ./*.deb && apt-get download -q "$kernel" busybox-static:arm64)
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: done; run tests with .venv/bin/pytest"
