"""A command's output on the host: in memory up to a limit, in a file beyond it."""

from __future__ import annotations

import io
import tempfile
import weakref
from pathlib import Path
from typing import IO

#: Output a stream keeps in memory before it moves to a file (per stream, per command).
DEFAULT_MEMORY_LIMIT = 16 * 1024 * 1024


class CommandOutput:
    """One output stream of a guest command (stdout or stderr), of any size.

    The first *memory_limit* bytes are kept in memory; past that the whole
    stream moves to an unlinked temporary file in *spill_dir*, so host memory
    stays bounded however much a command prints. The file goes away with the
    last reference to this object.
    """

    def __init__(
        self, memory_limit: int = DEFAULT_MEMORY_LIMIT, spill_dir: Path | None = None
    ) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - owned by self
            max_size=memory_limit, dir=None if spill_dir is None else str(spill_dir)
        )
        # Closed with this object, not left to the file's own finalizer, which warns.
        weakref.finalize(self, self._file.close)
        #: How many bytes the command wrote to this stream.
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append *data* (called as the guest streams it)."""
        self._file.write(data)
        self.size += len(data)

    @property
    def spilled(self) -> bool:
        """Whether the output outgrew the memory limit and lives in a file."""
        return bool(getattr(self._file, "_rolled", False))

    def read_bytes(self) -> bytes:
        """The whole output. For a spilled output this reads the file into memory."""
        self._file.seek(0)
        return self._file.read()

    def head(self, size: int) -> bytes:
        """The first *size* bytes (without reading the rest of a spilled output)."""
        self._file.seek(0)
        return self._file.read(size)

    def open(self) -> IO[bytes]:
        """A new binary reader from the first byte, with an offset of its own."""
        if not self.spilled:
            return io.BytesIO(self.read_bytes())
        self._file.flush()
        # A new open file description: reading it leaves this object's offset alone.
        return open(f"/proc/self/fd/{self._file.fileno()}", "rb")

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        where = "a file" if self.spilled else "memory"
        return f"<CommandOutput {self.size} bytes in {where}>"
