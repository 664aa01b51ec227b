#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for pytest-qemu: QEMU, the guest kernel,
# busybox and a C compiler (for the guest agent) from apt, then a virtualenv in .venv with the package and its test tools.
# Safe to run again: it installs only what is missing.
set -euo pipefail

cd "$(dirname "$0")/.."

packages=(qemu-system-x86 qemu-utils linux-image-amd64 busybox-static python3-venv gcc libc6-dev)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
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
