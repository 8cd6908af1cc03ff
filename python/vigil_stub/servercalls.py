"""Requests the stub makes of the server: LOG and METRIC frames.

They travel on the control socket, whose reader (the control thread)
hands replies to the waiting caller, so a model may call them from any
thread, execute included, while the main thread is busy.
"""

import json
import threading

from .wire import FLAG_ERROR, FLAG_REPLY


class ServerError(Exception):
    """The server refused a request; the message says why."""


class ServerCalls:
    def __init__(self, conn):
        self._conn = conn
        self._lock = threading.Lock()
        self._seq = 0
        self._waiting = {}  # seq -> [event, reply]
        self._closed = False

    def call(self, kind, obj):
        """Send obj and wait for the server's JSON reply."""
        slot = [threading.Event(), None]
        with self._lock:
            if self._closed:
                raise ServerError("the connection to the server is closed")
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seq = self._seq
            self._waiting[seq] = slot
        if not self._conn.send(kind, 0, seq, (json.dumps(obj).encode(),)):
            with self._lock:
                self._waiting.pop(seq, None)
            raise ServerError("the connection to the server is closed")
        slot[0].wait()
        flags, body = slot[1]
        if flags & FLAG_ERROR:
            try:
                message = json.loads(bytes(body)).get("message", "")
            except ValueError:
                message = bytes(body).decode("utf-8", "replace")
            raise ServerError(message)
        return json.loads(bytes(body)) if body else {}

    def notify(self, kind, obj):
        """Send obj without waiting; a reply, if any, is dropped."""
        with self._lock:
            if self._closed:
                return False
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seq = self._seq
        return self._conn.send(kind, 0, seq, (json.dumps(obj).encode(),))

    def deliver(self, flags, seq, body):
        """Hand a reply frame to its caller (called by the control thread)."""
        with self._lock:
            slot = self._waiting.pop(seq, None)
        if slot is not None:
            slot[1] = (flags, body)
            slot[0].set()

    def close(self):
        """Fail every waiting caller: the server is gone."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, {}
        body = json.dumps({"message": "the connection to the server is closed"}).encode()
        for slot in waiting.values():
            slot[1] = (FLAG_REPLY | FLAG_ERROR, body)
            slot[0].set()
