"""cloud-init's NoCloud seed: a small FAT volume labelled ``CIDATA`` that sets up a cloud image.

A distribution's cloud image has no user, no password and no key: cloud-init
reads them at first boot from a data source. The seed made here (one per VM,
with ``mkfs.vfat`` and mtools' ``mcopy``, nothing mounted) carries a
``meta-data`` (an instance id and a host name of the VM's own) and a
``user-data`` that creates a user who may ``sudo`` without a password and logs
in with the session's SSH public key, with the user's own user-data merged in.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_qemu.errors import ConfigurationError, SetupError

#: The user a seed creates unless told otherwise (the SSH channel's default user too).
DEFAULT_USER = "pytest"
#: The seed's size: mkfs.vfat's smallest comfortable FAT12 volume.
_SEED_KILOBYTES = 2048


@dataclass(frozen=True)
class CloudInit:
    """What a VM's cloud-init seed sets up.

    *user*: the user to create (with the session's SSH key, passwordless
    ``sudo``); *user_data*: your own cloud-config, as a mapping, merged into the
    seed's (lists are appended to, such as ``users`` or ``runcmd``; other keys are
    yours); *meta_data*: merged over the seed's ``instance-id`` and
    ``local-hostname``.
    """

    user: str = DEFAULT_USER
    user_data: Mapping[str, Any] = field(default_factory=dict)
    meta_data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.user, str) or not self.user or not self.user.isidentifier():
            raise ConfigurationError(
                f"CloudInit(user={self.user!r}): a user name is letters, digits and _"
            )
        for name in ("user_data", "meta_data"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigurationError(
                    f"CloudInit({name}=...) must be a mapping (a parsed cloud-config), not "
                    f"{type(getattr(self, name)).__name__}"
                )


def cloud_init_setting(value: bool | CloudInit | None) -> CloudInit | None:
    """The factory's ``cloud_init=`` argument as a :class:`CloudInit` (None: no seed)."""
    if value is None or value is False:
        return None
    if value is True:
        return CloudInit()
    if isinstance(value, CloudInit):
        return value
    raise ConfigurationError(f"cloud_init={value!r}: give True or a CloudInit(...)")


def merge_config(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    """*theirs* over *ours*: lists appended, mappings merged, anything else replaced."""
    merged = dict(ours)
    for key, value in theirs.items():
        mine = merged.get(key)
        if isinstance(mine, list) and isinstance(value, list):
            merged[key] = [*mine, *value]
        elif isinstance(mine, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_config(mine, value)
        else:
            merged[key] = value
    return merged


def seed_documents(
    config: CloudInit, public_key: str, hostname: str, instance_id: str
) -> dict[str, str]:
    """The seed's files, ``meta-data`` and ``user-data`` (JSON is YAML: no YAML library).

    The host name is the meta-data's ``local-hostname`` (*hostname* unless the user's
    meta-data says otherwise): nothing else in the seed names the VM.
    """
    user_data = merge_config(
        {
            "users": [
                {
                    "name": config.user,
                    "shell": "/bin/sh",
                    "sudo": "ALL=(ALL) NOPASSWD:ALL",
                    "lock_passwd": True,
                    "ssh_authorized_keys": [public_key],
                }
            ],
        },
        config.user_data,
    )
    meta_data = merge_config(
        {"instance-id": instance_id, "local-hostname": hostname}, config.meta_data
    )
    return {
        "meta-data": json.dumps(meta_data, indent=2) + "\n",
        "user-data": "#cloud-config\n" + json.dumps(user_data, indent=2) + "\n",
    }


def write_seed(path: Path, documents: Mapping[str, str]) -> Path:
    """The FAT volume ``CIDATA`` at *path* holding *documents* (made with mtools, no mount)."""
    tools = {"mkfs.vfat": "dosfstools", "mcopy": "mtools"}
    missing = [
        f"{tool} (package {package})"
        for tool, package in tools.items()
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()
    ]
    if missing:
        raise SetupError(
            f"a cloud-init seed needs {', '.join(missing)}: `sudo apt-get install "
            f"{' '.join(sorted(set(tools.values())))}`"
        )
    path.unlink(missing_ok=True)
    mkfs = shutil.which("mkfs.vfat") or "/usr/sbin/mkfs.vfat"
    _tool([mkfs, "-C", "-n", "CIDATA", str(path), str(_SEED_KILOBYTES)])
    for name, text in documents.items():
        source = path.with_name(f"{path.name}.{name}")
        source.write_text(text)
        try:
            _tool(["mcopy", "-i", str(path), str(source), f"::{name}"])
        finally:
            source.unlink()
    return path


def _tool(command: list[str]) -> None:
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise SetupError(
            f"making the cloud-init seed: {' '.join(command)} failed: {result.stderr.strip()}"
        )
