"""Building QEMU option strings (``driver,key=value,...``) safely.

QEMU splits option strings on commas and accepts a doubled comma as a literal
one. A value pasted in unescaped lets a directory named ``x,security_model=none``
rewrite the device's options, so every value passes through :func:`escape`.
"""

from __future__ import annotations

import re

from pytest_qemu.errors import ConfigurationError

_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,30}")
_GUEST_PATH_PATTERN = re.compile(r"/[A-Za-z0-9_./-]*")


def escape(value: str) -> str:
    """Return *value* with every comma doubled, as QEMU's option parser expects."""
    if "\0" in value or "\n" in value:
        raise ConfigurationError(
            f"{value!r} cannot be passed to QEMU: it contains a NUL or newline character"
        )
    return value.replace(",", ",,")


def option_string(head: str, /, **options: str | int | bool | None) -> str:
    """Join *head* (a driver name, or options of our own) and escaped options.

    Keys come from our code, never from users; values are escaped. ``None``
    values are left out; booleans become ``on``/``off``.
    """
    parts = [head]
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "on" if value else "off"
        else:
            text = escape(str(value))
        parts.append(f"{key}={text}")
    return ",".join(parts)


def validate_id(value: str, what: str) -> str:
    """Check that *value* can serve as a QEMU id or 9p mount tag."""
    if not _ID_PATTERN.fullmatch(value):
        raise ConfigurationError(
            f"{what} {value!r} is not valid: use 1 to 31 letters, digits, '_', '.' or '-', "
            "starting with a letter"
        )
    return value


def validate_kernel_argument(value: object, what: str = "kernel argument") -> str:
    """Check one kernel command-line argument: a ``str`` without control characters.

    The kernel command line is one line of text; a newline or other control
    character in it splits or garbles the arguments the guest sees.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} {value!r} is not a string: give each argument as a str")
    for character in value:
        if ord(character) < 32 or ord(character) == 127:
            raise ConfigurationError(
                f"{what} {value!r} contains the control character {character!r}: the kernel "
                "command line is a single line of text, so remove it"
            )
    return value


def validate_guest_path(value: str) -> str:
    """Check a guest mount point: absolute, and safe to pass on the kernel command line."""
    if not _GUEST_PATH_PATTERN.fullmatch(value) or "/../" in f"{value}/" or value == "/":
        raise ConfigurationError(
            f"guest path {value!r} is not valid: use an absolute path other than '/' made of "
            "letters, digits, '_', '.', '-' and '/'"
        )
    return value
