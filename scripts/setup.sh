#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for pytest-qemu, and is safe to run again:
# - QEMU for every architecture (x86, Arm, POWER, s390x, MIPS, RISC-V), their
#   firmware (OpenSBI, OVMF, AAVMF), the host's kernel, busybox-static and a C
#   cross compiler per architecture (the guest agent is compiled for each) from apt, and mmdebstrap
#   and e2fsprogs, which build the Debian test image (pytest_qemu/images/), and
#   syslinux, mtools and dosfstools, which make a disk that boots by itself (and
#   cloud-init seeds), and OpenSSH's client (channel="ssh", the session's key pair);
# - nothing foreign: the first aarch64 VM downloads Debian's arm64 kernel and
#   busybox through a private apt configuration (the host's apt is never changed;
#   `python -m pytest_qemu fetch --arch all` does it ahead);
# - .venv with the package and its test tools.
set -euo pipefail

cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

packages=(
    qemu-system-x86 qemu-system-arm qemu-system-ppc qemu-system-misc qemu-system-mips qemu-utils
    opensbi ovmf ovmf-ia32 qemu-efi-aarch64 qemu-efi-arm linux-image-amd64 busybox-static kmod python3-venv gdb gdb-multiarch
    gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    gcc-i686-linux-gnu libc6-dev-i386-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
    gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross gcc-s390x-linux-gnu libc6-dev-s390x-cross
    gcc-mips64el-linux-gnuabi64 libc6-dev-mips64el-cross gcc-riscv64-linux-gnu libc6-dev-riscv64-cross
    mmdebstrap fakeroot e2fsprogs syslinux mtools dosfstools openssh-client
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
