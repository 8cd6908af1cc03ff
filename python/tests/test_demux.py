"""wire.Demux: whichever thread needs a frame reads it, and frames for other
threads reach them."""

import socket
import threading

from vigil_stub import wire


def frame(kind, flags, seq, body=b""):
    return wire.HEADER.pack(len(body), kind, flags, 0, seq) + body


def pair():
    a, b = socket.socketpair()
    return wire.Demux(wire.Conn(a)), b


def test_requests_and_replies_reach_their_threads():
    demux, server = pair()
    demux.expect(1)
    demux.expect(2)
    got = {}

    def waiter(seq):
        got[seq] = demux.next_reply(seq)

    threads = [threading.Thread(target=waiter, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    # Out of order, with a request for the main thread in between.
    server.sendall(frame(wire.KIND_BLS_RESPONSE, wire.FLAG_REPLY, 2, b"two")
                   + frame(wire.KIND_EXECUTE, 0, 40, b"batch")
                   + frame(wire.KIND_BLS_RESPONSE, wire.FLAG_REPLY, 1, b"one"))
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert bytes(got[1][3]) == b"one" and bytes(got[2][3]) == b"two"
    req = demux.next_request()
    assert (req[0], req[2], bytes(req[3])) == (wire.KIND_EXECUTE, 40, b"batch")


def test_main_thread_reads_replies_while_idle():
    demux, server = pair()
    demux.expect(5)
    result = []
    t = threading.Thread(target=lambda: result.append(demux.next_request()))
    t.start()  # the main thread is the reader now
    server.sendall(frame(wire.KIND_BLS_RESPONSE, wire.FLAG_REPLY, 5, b"r"))
    assert bytes(demux.next_reply(5)[3]) == b"r"
    server.sendall(frame(wire.KIND_FINALIZE, 0, 9))
    t.join(10)
    assert result[0][0] == wire.KIND_FINALIZE


def test_end_of_stream_wakes_every_waiter():
    demux, server = pair()
    demux.expect(1)
    out = []
    t = threading.Thread(target=lambda: out.append(demux.next_reply(1)))
    t.start()
    server.close()
    t.join(10)
    assert out == [None]
    assert demux.next_request() is None


def test_late_reply_is_dropped():
    demux, server = pair()
    server.sendall(frame(wire.KIND_BLS_RESPONSE, wire.FLAG_REPLY, 77, b"late") + frame(wire.KIND_PING, 0, 3))
    f = demux.next_request()
    assert (f[0], f[2]) == (wire.KIND_PING, 3)
