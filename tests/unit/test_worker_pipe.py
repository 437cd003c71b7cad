"""MessageReader reads what multiprocessing's Connection.send wrote (the worker's side), without
blocking: whole messages only, several in one read, a large one across reads, and the end of the
pipe only after the messages that came before it."""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
from multiprocessing.connection import Connection

import pytest

from server.pipelines.worker_pipe import MessageReader


@pytest.fixture()
def pipe():
    ours, theirs = socket.socketpair()
    connection = Connection(ours.detach())
    reader = MessageReader(connection.fileno())
    yield reader, theirs
    reader.close()
    connection.close()
    theirs.close()


def readable_end(reader: MessageReader) -> socket.socket:
    return reader._socket  # the reader's copy of the server's end, to wait on until more arrives


def send(sock: socket.socket, message: object) -> None:
    """As the worker writes (a Connection closes its fd when it goes: it gets a copy)."""
    writer = Connection(os.dup(sock.fileno()))
    writer.send(message)
    writer.close()


def test_nothing_there_returns_at_once(pipe) -> None:
    reader, _ = pipe
    assert reader.read() == ([], False)


def test_every_message_that_arrived_comes_out_in_order(pipe) -> None:
    reader, worker = pipe
    messages = [("updates", [(1, "héllo", [5], [], None, None)], (0.1, 0.2, 3, 1, 1, 1), [(0.01, None, (0.002,))]), ("rebuilding", [], None, [])]
    for message in messages:
        send(worker, message)
    assert reader.read() == (messages, False)
    assert reader.read() == ([], False)


def test_a_message_larger_than_one_read_waits_until_it_is_whole(pipe) -> None:
    reader, worker = pipe
    big = ("updates", [(7, "x" * 90_000, list(range(1000)), [], "length", None)], None, [])  # over one read (64 KiB)
    data = pickle.dumps(big)
    frame = struct.pack("!i", len(data)) + data
    worker.sendall(frame[:40_000])  # both parts fit in the socket's buffer: no writer thread needed
    assert reader.read() == ([], False)
    worker.sendall(frame[40_000:])
    received: list = []
    for _ in range(100):  # each read takes what has arrived; wait for more to arrive in between
        received, closed = reader.read()
        assert not closed
        if received or not select.select([readable_end(reader)], [], [], 10)[0]:
            break
    assert received == [big]


def test_the_long_length_form_is_read(pipe) -> None:
    reader, worker = pipe
    data = pickle.dumps(("updates", [], None, []))
    worker.sendall(struct.pack("!i", -1) + struct.pack("!Q", len(data)) + data)
    assert reader.read() == ([("updates", [], None, [])], False)


def test_the_end_of_the_pipe_comes_after_the_last_messages(pipe) -> None:
    reader, worker = pipe
    last = ("updates", [(3, "", [], [], None, "the engine could not run this request")], None, [])
    send(worker, last)
    worker.close()
    assert reader.read()[0] == [last]  # a short read stops there: the end shows in the next read
    assert reader.read() == ([], True)
