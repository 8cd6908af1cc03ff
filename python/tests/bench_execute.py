"""CPU per request of the stub's EXECUTE path for Triton's `simple` model.

Measures, on the main thread (time.thread_time), what the stub does for a
batch once its frame has been read: the body copied out of the receive
buffer, decode, the model's execute (INT32[16] add and subtract), the
runtime's checks, encode, and the reply joined as wire.Conn.send joins it.
Socket system calls are left out. Not a pytest test (no test_ prefix).

    python python/tests/bench_execute.py                      # this tree
    python python/tests/bench_execute.py --baseline OTHER/python

With --baseline, both trees run in processes of their own that take turns,
chunk by chunk, the order swapping every pair; the report gives this tree's
CPU per request as a ratio of the baseline's, per order and overall
(medians of the pairs). OTHER/python
is another checkout's python directory, e.g.
    git -C /work/main archive main python | tar -x -C /tmp/base
    python python/tests/bench_execute.py --baseline /tmp/base/python
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = '''import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
        return responses
'''

CONFIG = {
    "name": "simple", "backend": "python", "max_batch_size": 8,
    "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
              {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16]},
               {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": [16]}],
}


def execute_body(batch, align):
    """An EXECUTE body as the server sends it for batch requests of simple
    (internal/ipc/codec.go); align is the tree's in-band data alignment (1
    for a tree without one). Each request has its own id, as clients'
    requests do."""
    meta = [struct.pack("<I", batch)]
    data = []
    a = struct.pack("<16i", *range(16))
    b = struct.pack("<16i", *([1] * 16))
    for i in range(batch):
        rid = b""
        meta.append(struct.pack("<IIII", len(rid), 0, 2, 0) + rid)
        for name, raw in ((b"INPUT0", a), (b"INPUT1", b)):
            meta.append(struct.pack("<IBB", len(name), 8, 2) + name + struct.pack("<2qQ", 1, 16, len(raw)))
            data.append(raw)
        meta.append(struct.pack("<IBQI", 0, 0, 0, 0))
    meta = b"".join(meta)
    head = struct.pack("<I", len(meta)) + meta
    out = bytearray(head)
    for raw in data:
        out += bytes(-len(out) % align)
        out += raw
    return bytes(out)


class _Conn:
    """Stands in for wire.Conn: send builds the frame as it would, without
    the socket."""

    passes_fds = False

    def __init__(self, wire):
        self._header = wire.HEADER
        self.sent = 0

    def send(self, kind, flags, seq, parts=(), fds=()):
        size = 0
        for p in parts:
            size += p.nbytes if isinstance(p, memoryview) else len(p)
        frame = b"".join((self._header.pack(size, kind, flags, len(fds), seq), *parts))
        self.sent += len(frame)
        return True

    def read_frame(self):
        return None


def worker(tree, batch, iters):
    """Serve timing requests on stdin: each line runs iters batches and
    prints the CPU per request in µs."""
    sys.path.insert(0, tree)
    from vigil_stub import tensors, wire  # noqa: PLC0415
    from vigil_stub.runtime import Stub  # noqa: PLC0415

    work = tempfile.mkdtemp(prefix="vigil-bench-execute-")
    model_file = os.path.join(work, "simple", "1", "model.py")
    os.makedirs(os.path.dirname(model_file))
    with open(model_file, "w") as f:
        f.write(MODEL)
    conn = _Conn(wire)
    stub = Stub(conn, _Conn(wire))
    init = {"model_file": model_file, "args": {
        "model_config": json.dumps(CONFIG), "model_name": "simple", "model_version": "1",
        "model_repository": os.path.dirname(os.path.dirname(model_file)), "model_instance_kind": "KIND_CPU",
        "model_instance_name": "simple_0", "model_instance_device_id": "0"}}
    stub._init(1, bytearray(json.dumps(init).encode()))
    frame = memoryview(bytearray(execute_body(batch, getattr(tensors, "_ALIGN", 1))))
    n = len(frame)
    execute = stub._execute
    seq = 2
    for _ in sys.stdin:
        t0 = time.thread_time()
        for _ in range(iters):
            execute(seq, bytearray(frame[:n]))  # the reader copies each body out of its buffer
            seq += 1
        t = (time.thread_time() - t0) / (iters * batch)
        print("%.4f" % (t * 1e6), flush=True)


class Worker:
    def __init__(self, tree, args):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", tree, "--batch", str(args.batch),
                                   "--iters", str(args.iters)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self):
        self.p.stdin.write("\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit("bench worker died")
        return float(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="another tree's python directory to compare with")
    ap.add_argument("--batch", type=int, default=1, help="requests per EXECUTE")
    ap.add_argument("--iters", type=int, default=1000, help="batches per timed chunk")
    ap.add_argument("--chunks", type=int, default=40, help="timed chunks per tree (after 3 untimed)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.batch, args.iters)
        return
    this = Worker(HERE, args)
    base = Worker(os.path.abspath(args.baseline), args) if args.baseline else None
    for _ in range(3):  # warm up
        this.run()
        if base:
            base.run()
    if not base:
        ts = [this.run() for _ in range(args.chunks)]
        this.close()
        print("simple, batch %d: %.2f µs CPU per request (median of %d chunks, min %.2f)" % (
            args.batch, statistics.median(ts), len(ts), min(ts)))
        return
    # Both trees stay loaded and take turns, chunk by chunk, the order
    # swapping every pair, so that the machine's other load weighs on both.
    pairs = {"baseline first": [], "this tree first": []}
    for i in range(args.chunks):
        if i % 2 == 0:
            b = base.run()
            t = this.run()
            pairs["baseline first"].append((b, t))
        else:
            t = this.run()
            b = base.run()
            pairs["this tree first"].append((b, t))
    this.close()
    base.close()
    every = pairs["baseline first"] + pairs["this tree first"]
    for order, ps in pairs.items():
        print("%-16s this tree / baseline = %.3f (median of %d pairs)" % (
            order + ":", statistics.median(t / b for b, t in ps), len(ps)))
    print("simple, batch %d: baseline %.2f µs, this tree %.2f µs CPU per request (medians); ratio %.3f" % (
        args.batch, statistics.median(b for b, _ in every), statistics.median(t for _, t in every),
        statistics.median(t / b for b, t in every)))


if __name__ == "__main__":
    main()
