"""This process's SSH key pair, made with ``ssh-keygen`` in a private directory.

Made on first use (an Ed25519 key without a passphrase, in a directory only the
user can enter) and removed when the process exits. Nothing is read from or
written to ``~/.ssh``: cloud-init seeds carry its public key, and the SSH
channel logs in with its private key.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from pytest_qemu.errors import SetupError

_lock = threading.Lock()
_session_key: SSHKeyPair | None = None


@dataclass(frozen=True)
class SSHKeyPair:
    """A private key file and its public key (one ``authorized_keys`` line)."""

    private_key: Path
    public_key: str


def session_key() -> SSHKeyPair:
    """This process's key pair (made the first time it is asked for)."""
    global _session_key
    with _lock:
        if _session_key is None:
            directory = Path(tempfile.mkdtemp(prefix="pytest-qemu-ssh-"))  # mode 0700
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _session_key = generate_key_pair(directory / "id_ed25519")
        return _session_key


def generate_key_pair(private_key: Path, comment: str = "pytest-qemu") -> SSHKeyPair:
    """A new Ed25519 key pair without a passphrase at *private_key* (and ``.pub``)."""
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private_key)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
    except FileNotFoundError:
        raise SetupError(
            "ssh-keygen was not found: install OpenSSH's client (Debian: `sudo apt-get "
            "install openssh-client`)"
        ) from None
    except subprocess.CalledProcessError as error:
        raise SetupError(f"ssh-keygen failed: {error.stderr.strip()}") from None
    public = private_key.with_name(private_key.name + ".pub").read_text().strip()
    return SSHKeyPair(private_key, public)
