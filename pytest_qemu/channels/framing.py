"""The agent protocol's frames: pure encoding and decoding, no I/O.

A frame is a 16-byte header and a payload of up to 1 MiB::

    magic "PQAg" | type u8 | 0 u8 | check u16 | request id u32 | payload length u32

all little-endian. The check covers type, id and length, so that a reader that
lost step (an agent that died half-way through a request, leaving the rest of
it to the next agent) finds the next real header instead of taking payload
bytes for one. The guest side is ``pytest_qemu/guests/files/agent.c``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from typing import NamedTuple

MAGIC = b"PQAg"
HEADER_SIZE = 16
MAX_PAYLOAD = 1 << 20
#: Payload size for streamed data (stdin, files): large enough to keep per-frame costs low.
CHUNK_SIZE = 64 * 1024

_HEADER = struct.Struct("<4sBBHII")


class FrameType(enum.IntEnum):
    """What a frame carries. Host to guest below 64, guest to host from 64."""

    PING = 1
    RUN = 2
    STDIN = 3
    KILL = 4
    PUT = 5
    GET = 6
    DATA = 7
    KLOG = 8
    READY = 64
    PONG = 65
    STDOUT = 66
    STDERR = 67
    EXIT = 68
    ERROR = 69
    FILE = 70
    DONE = 71


class Frame(NamedTuple):
    """One decoded frame. ``type`` is an int so that unknown types pass through."""

    type: int
    request_id: int
    payload: bytes


def _check(frame_type: int, request_id: int, length: int) -> int:
    value = 0x5A5A
    for byte in bytes((frame_type, 0)) + struct.pack("<II", request_id, length):
        value = (value * 31 + byte) & 0xFFFFFFFF
    return (value ^ (value >> 16)) & 0xFFFF


def encode(frame_type: FrameType, request_id: int, payload: bytes = b"") -> bytes:
    """One frame, ready to send."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    check = _check(frame_type, request_id, len(payload))
    return _HEADER.pack(MAGIC, frame_type, 0, check, request_id, len(payload)) + payload


def encode_stream(frame_type: FrameType, request_id: int, data: bytes) -> Iterator[bytes]:
    """*data* as frames of at most :data:`CHUNK_SIZE`, then an empty frame meaning "end"."""
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_SIZE):
        yield encode(frame_type, request_id, bytes(view[start : start + CHUNK_SIZE]))
    yield encode(frame_type, request_id)


def encode_run(
    request_id: int,
    command: str,
    timeout_ms: int,
    cwd: str = "",
    env: dict[str, str] | None = None,
    root: str = "",
) -> bytes:
    """A RUN request: timeout (0: none), flags, then NUL-terminated root (a directory to
    chroot into, or empty), cwd, command, NAME=VALUE..."""
    strings = [root, cwd, command, *(f"{name}={value}" for name, value in (env or {}).items())]
    for text in strings:
        if "\0" in text:
            raise ValueError(f"{text!r} contains a NUL character, which a command cannot hold")
    body = b"".join(text.encode() + b"\0" for text in strings)
    return encode(FrameType.RUN, request_id, struct.pack("<II", timeout_ms, 0) + body)


def encode_put(request_id: int, guest_path: str, mode: int) -> bytes:
    """A PUT request; the file's bytes follow as DATA frames ending with an empty one."""
    return encode(FrameType.PUT, request_id, struct.pack("<I", mode) + guest_path.encode() + b"\0")


def encode_get(request_id: int, guest_path: str) -> bytes:
    """A GET request; the agent answers FILE (the mode), DATA frames, an empty DATA."""
    return encode(FrameType.GET, request_id, guest_path.encode() + b"\0")


def encode_kernel_log(request_id: int) -> bytes:
    """A KLOG request (the guest kernel's log); answered like GET."""
    return encode(FrameType.KLOG, request_id, b"")


def decode_hello(payload: bytes) -> tuple[str, frozenset[str]]:
    """A READY or PONG frame's (setup status, requests the agent answers beyond the first
    version's). An agent older than features sends the status alone."""
    status, _, features = payload.partition(b"\0")
    return (
        status.decode("ascii", errors="replace") or "-",
        frozenset(features.decode("ascii", errors="replace").split()),
    )


def decode_exit(payload: bytes) -> tuple[int, bool]:
    """An EXIT frame's (status, timed out). The status is negative for a signal."""
    status, flags = struct.unpack("<iI", payload[:8])
    return status, bool(flags & 1)


def decode_mode(payload: bytes) -> int:
    """A FILE frame's permission bits."""
    (mode,) = struct.unpack("<I", payload[:4])
    return int(mode)


class FrameReader:
    """Turns a byte stream into frames, skipping bytes that cannot start a frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        #: Bytes skipped to find a header: non-zero after an agent died mid-frame.
        self.skipped = 0

    def feed(self, data: bytes | memoryview) -> Iterator[Frame]:
        """Add *data*; yield every frame it completes."""
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER_SIZE:
            magic, frame_type, _, check, request_id, length = _HEADER.unpack_from(buffer)
            if (
                magic != MAGIC
                or length > MAX_PAYLOAD
                or check != _check(frame_type, request_id, length)
            ):
                found = buffer.find(MAGIC, 1)
                drop = found if found > 0 else max(len(buffer) - len(MAGIC) + 1, 1)
                self.skipped += drop
                del buffer[:drop]
                continue
            end = HEADER_SIZE + length
            if len(buffer) < end:
                return
            payload = bytes(buffer[HEADER_SIZE:end])
            del buffer[:end]
            yield Frame(frame_type, request_id, payload)

    def reset(self) -> None:
        """Forget a partial frame (the sender that wrote it is gone)."""
        self._buffer.clear()
