"""Your terminal on a VM's serial console: an interactive relay, ended with Ctrl-]."""

from __future__ import annotations

import os
import select
import socket
import sys
import termios
import tty
from pathlib import Path

#: The key that ends the relay (as in telnet): Ctrl-].
ESCAPE = b"\x1d"


def attach(console_socket: Path, first_input: bytes = b"\n") -> None:
    """Relay this process's terminal to the console at *console_socket* until Ctrl-] or
    until QEMU closes it. *first_input* is typed first (a newline shows the prompt)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(str(console_socket))
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved is not None:
            tty.setraw(stdin)
        connection.sendall(first_input)
        while True:
            readable, _, _ = select.select([connection, stdin], [], [])
            if connection in readable:
                data = connection.recv(65536)
                if not data:
                    return
                os.write(stdout, data)
            if stdin in readable:
                typed = os.read(stdin, 1024)
                if not typed or ESCAPE in typed:
                    connection.sendall(typed.split(ESCAPE, 1)[0])
                    return
                connection.sendall(typed)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        connection.close()
