"""The server's reading end of a generation worker's pipe: every whole message that has arrived, in
one non-blocking read.

The worker writes with multiprocessing's Connection.send (a 4-byte big-endian length, or -1 and an
8-byte length, then the pickle). Reading with Connection itself cost a poll() before and after each
message, each building a selector, and two reads per message: about a quarter of the event loop's
time per streamed token. Here one recv(MSG_DONTWAIT) takes all that is there. The flag makes this one
call non-blocking and leaves the socket blocking for the writer thread, which shares it.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct

_READ_SIZE = 1 << 16
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")  # follows a length of -1 (messages over 2 GiB)


class MessageReader:
    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=os.dup(fd))  # closing it leaves `fd` (the Connection's) open
        self._socket.setblocking(True)  # the writer's blocking sends share it, whatever socket's default timeout
        self._buffer = bytearray()

    def read(self) -> tuple[list[object], bool]:
        """The messages that are complete now, and whether the worker has closed its end (after them)."""
        closed = False
        while True:
            try:
                chunk = self._socket.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # reset: the worker died
                closed = True
                break
            if not chunk:
                closed = True
                break
            self._buffer += chunk
            if len(chunk) < _READ_SIZE:
                break
        return self._messages(), closed

    def _messages(self) -> list[object]:
        buffer, start, messages = self._buffer, 0, []
        while len(buffer) - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, start)
            header = _LENGTH.size
            if size == -1:
                if len(buffer) - start < header + _LONG_LENGTH.size:
                    break
                (size,) = _LONG_LENGTH.unpack_from(buffer, start + header)
                header += _LONG_LENGTH.size
            if len(buffer) - start - header < size:
                break
            messages.append(pickle.loads(buffer[start + header : start + header + size]))
            start += header + size
        del buffer[:start]
        return messages

    def close(self) -> None:
        self._socket.close()
