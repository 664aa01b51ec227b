"""Where the lease state lives, and the checks that keep other users out of it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pytest_qemu.allocation.errors import AllocationError

STATE_DIR_ENV = "PYTEST_QEMU_STATE_DIR"


def default_state_dir() -> Path:
    """The directory all pytest-qemu processes of this user share, created if missing.

    ``$PYTEST_QEMU_STATE_DIR`` if set; else ``$XDG_RUNTIME_DIR/pytest-qemu`` if
    ``XDG_RUNTIME_DIR`` is set and exists; else ``/tmp/pytest-qemu-<uid>``.
    The directory is created with mode ``0o700``. An existing one owned by
    another user, or writable by group or others, raises :class:`AllocationError`.
    """
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        path = Path(configured)
    else:
        runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
        if runtime_dir and Path(runtime_dir).is_dir():
            path = Path(runtime_dir) / "pytest-qemu"
        else:
            # Deliberately not $TMPDIR: runs with different TMPDIRs (tox, CI
            # wrappers) must still share one state, or they hand out the same ports.
            path = Path("/tmp") / f"pytest-qemu-{os.getuid()}"
    return prepare_state_dir(path)


def prepare_state_dir(path: Path) -> Path:
    """Create *path* (mode ``0o700``) if needed and check that only we can write it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise AllocationError(
            f"cannot create the pytest-qemu state directory {path}: {error}. "
            f"Set {STATE_DIR_ENV} to a directory you own"
        ) from error
    uid = os.getuid()
    try:
        link_info = path.lstat()
        info = path.stat()
    except OSError as error:
        raise AllocationError(
            f"cannot inspect the pytest-qemu state directory {path}: {error}"
        ) from error
    if not stat.S_ISDIR(info.st_mode):
        raise AllocationError(
            f"the pytest-qemu state directory {path} is not a directory: remove it "
            f"or set {STATE_DIR_ENV} to another path"
        )
    # lstat too: in /tmp another user could plant a symlink to a directory of ours.
    for what, owner_uid in (("symlink", link_info.st_uid), ("directory", info.st_uid)):
        if owner_uid != uid:
            raise AllocationError(
                f"the pytest-qemu state {what} {path} is owned by uid {owner_uid}, not by you "
                f"(uid {uid}); another user could forge or steal leases through it. Remove it, "
                f"or set {STATE_DIR_ENV} to a directory you own"
            )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise AllocationError(
            f"the pytest-qemu state directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):#o}); other users could tamper with leases. "
            f"Run `chmod 700 {path}` or set {STATE_DIR_ENV} to a private directory"
        )
    return path
