"""Copy-on-write overlays of disk images, made with ``qemu-img``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from pytest_qemu.errors import ConfigurationError, SetupError

_QCOW2_MAGIC = b"QFI\xfb"


def image_format(image: Path) -> str:
    """The format of the disk image *image* (``qcow2``, ``raw``...), refusing what is none."""
    try:
        with image.open("rb") as file:
            head = file.read(1088)
    except OSError as error:
        raise ConfigurationError(f"disk image {image}: {error.strerror}") from None
    if head.startswith(_QCOW2_MAGIC):
        return "qcow2"
    info = _qemu_img("info", "--output=json", str(image), what=f"reading {image}")
    detected = str(json.loads(info).get("format", "raw"))
    if detected != "raw":
        return detected
    # A raw file is any file: accept one that holds a partition table or a file system.
    has_mbr = len(head) >= 512 and head[510:512] == b"\x55\xaa"
    has_ext = len(head) >= 1082 and head[1080:1082] == b"\x53\xef"
    if not (has_mbr or has_ext):
        raise ConfigurationError(
            f"{image} is not a disk image: it is no qcow2 or other format QEMU knows, and as "
            "a raw disk it has neither a partition table nor an ext2/3/4 file system"
        )
    return "raw"


def create_overlay(backing: Path, backing_format: str, overlay: Path) -> Path:
    """A new qcow2 *overlay* whose backing file is *backing*: writes go to the overlay."""
    _qemu_img(
        "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", backing_format, str(overlay),
        what=f"making an overlay of {backing}",
    )  # fmt: skip
    return overlay


def recreate_overlay(frozen: Path, overlay: Path) -> Path:
    """A new, empty *overlay* over the backing file of the overlay *frozen*: the disk
    as it was before anything was written to *frozen*."""
    info = json.loads(_qemu_img("info", "--output=json", str(frozen), what=f"reading {frozen}"))
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if not backing:
        raise ConfigurationError(f"{frozen} has no backing file to make a new overlay over")
    return create_overlay(Path(backing), str(info.get("backing-filename-format", "raw")), overlay)


def _qemu_img(*arguments: str, what: str) -> str:
    tool = shutil.which("qemu-img")
    if tool is None:
        raise SetupError(f"{what} needs qemu-img: install it with `apt-get install qemu-utils`")
    result = subprocess.run([tool, *arguments], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        message = result.stderr.strip()
        if "backing" in message.lower():
            raise ConfigurationError(
                f"{what} failed: {message}. The image's own backing file may have moved: "
                "check `qemu-img info --backing-chain` on it"
            )
        raise ConfigurationError(f"{what} failed: {message}")
    return result.stdout
