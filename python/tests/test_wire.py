"""wire.Conn's reader: frames however the bytes arrive, bodies larger than
its buffer, descriptors with their frame, and end of stream."""

import array
import os
import socket
import threading

from vigil_stub import wire


def frame(kind, flags, seq, body=b"", nfds=0):
    return wire.HEADER.pack(len(body), kind, flags, nfds, seq) + body


def test_frames_sent_together_are_read_one_by_one():
    a, b = socket.socketpair()
    conn = wire.Conn(a)
    b.sendall(frame(wire.KIND_EXECUTE, 0, 1, b"one") + frame(wire.KIND_PING, 0, 2) + frame(wire.KIND_EXECUTE, 0, 3, b"three"))
    got = [conn.read_frame() for _ in range(3)]
    assert [(k, s, bytes(body)) for k, _, s, body in got] == [
        (wire.KIND_EXECUTE, 1, b"one"), (wire.KIND_PING, 2, b""), (wire.KIND_EXECUTE, 3, b"three")]
    # Each body is its own bytearray, not a view of the reader's buffer.
    assert all(type(body) is bytearray for _, _, _, body in got)
    got[0][3][:] = b"ONE"
    assert bytes(got[2][3]) == b"three"


def test_frames_arriving_a_byte_at_a_time():
    a, b = socket.socketpair()
    conn = wire.Conn(a, pass_fds=True)
    data = frame(wire.KIND_EXECUTE, 0, 7, b"abcdefgh") + frame(wire.KIND_FINALIZE, 0, 8)

    def dribble():
        for i in range(len(data)):
            b.sendall(data[i:i + 1])

    t = threading.Thread(target=dribble)
    t.start()
    k, _, seq, body = conn.read_frame()
    assert (k, seq, bytes(body)) == (wire.KIND_EXECUTE, 7, b"abcdefgh")
    k, _, seq, body = conn.read_frame()
    assert (k, seq, bytes(body)) == (wire.KIND_FINALIZE, 8, b"")
    t.join(10)


def test_a_body_larger_than_the_buffer_and_the_frame_after_it():
    a, b = socket.socketpair()
    conn = wire.Conn(a)
    big = os.urandom(3 * wire._READ_BUFFER + 5)
    data = frame(wire.KIND_EXECUTE, 0, 1, big) + frame(wire.KIND_EXECUTE, 0, 2, b"next")
    t = threading.Thread(target=b.sendall, args=(data,))
    t.start()
    _, _, seq, body = conn.read_frame()
    assert seq == 1 and bytes(body) == big
    body.extend(b"x")  # the body is the caller's, resizable
    _, _, seq, body = conn.read_frame()
    assert (seq, bytes(body)) == (2, b"next")
    t.join(10)


def test_descriptors_come_with_their_frame():
    a, b = socket.socketpair()
    conn = wire.Conn(a, pass_fds=True)
    r, w = os.pipe()
    try:
        b.sendall(frame(wire.KIND_PING, 0, 1))
        hdr = frame(wire.KIND_EXECUTE, wire.FLAG_OUT_REGION, 2, b"body", nfds=2)
        b.sendmsg([hdr], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
        assert conn.read_frame()[2] == 1
        _, _, seq, body = conn.read_frame()
        assert seq == 2 and bytes(body) == b"body"
        assert len(body.fds) == 1 and body.out_region is not None
        os.write(body.out_region, b"!")
        assert os.read(body.fds[0], 1) == b"!"
        os.close(body.fds[0])
        os.close(body.out_region)
    finally:
        os.close(r)
        os.close(w)


def test_a_frame_claiming_descriptors_that_did_not_come_is_an_error():
    a, b = socket.socketpair()
    conn = wire.Conn(a, pass_fds=True)
    b.sendall(frame(wire.KIND_EXECUTE, 0, 1, b"x", nfds=1))
    try:
        conn.read_frame()
    except OSError as e:
        assert "1 descriptors" in str(e)
    else:
        raise AssertionError("read_frame accepted a frame whose descriptors never came")


def test_end_of_stream_inside_a_frame_is_none():
    for cut in (5, wire.HEADER_SIZE + 2):
        a, b = socket.socketpair()
        conn = wire.Conn(a)
        b.sendall(frame(wire.KIND_EXECUTE, 0, 1, b"abcdef")[:cut])
        b.close()
        assert conn.read_frame() is None
    a, b = socket.socketpair()
    conn = wire.Conn(a)
    b.close()
    assert conn.read_frame() is None


def test_bodies_are_16_byte_aligned():
    # The codec aligns tensor data to 16 bytes from the body's start
    # (internal/ipc/doc.go); that makes aligned arrays only if the body's
    # storage is aligned too, whichever way it was received.
    import numpy as np  # noqa: PLC0415

    a, b = socket.socketpair()
    for pass_fds in (False, True):
        conn = wire.Conn(a, pass_fds=pass_fds)
        for n in (1, 5, 12, 100, 4093, 70000, 300001):
            t = threading.Thread(target=b.sendall, args=(frame(wire.KIND_EXECUTE, 0, 1, b"x" * n) +
                                                        frame(wire.KIND_EXECUTE, 0, 2, b"y" * (n + 3)),))
            t.start()
            for _ in range(2):
                body = conn.read_frame()[3]
                assert np.frombuffer(body, np.uint8).ctypes.data % 16 == 0, (pass_fds, n)
            t.join()
