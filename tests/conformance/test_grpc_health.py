"""grpc.health.v1.Health (SPEC §7) over a plain grpcio channel.

grpcio-health-checking is not a dependency, so the two tiny messages are
encoded by hand: HealthCheckRequest{string service = 1} and
HealthCheckResponse{ServingStatus status = 1}.
"""

import grpc
import pytest

from vigil_testlib import CALL_TIMEOUT_S

SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3


def encode_request(service: str) -> bytes:
    raw = service.encode("utf-8")
    if not raw:
        return b""
    assert len(raw) < 128
    return b"\x0a" + bytes([len(raw)]) + raw


def decode_status(data: bytes) -> int:
    if not data:
        return 0  # UNKNOWN (proto3 default)
    assert data[0] == 0x08, data
    return data[1]


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(server.grpc_addr)
    yield ch
    ch.close()


def check(channel, service):
    call = channel.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=encode_request,
                               response_deserializer=decode_status)
    return call(service, timeout=CALL_TIMEOUT_S)


@pytest.mark.parametrize("service", ["", "liveness", "readiness", "startup",
                                     "model/add_sub", "model/identity", "model/health_hook"])
def test_health_check_serving(channel, service):
    assert check(channel, service) == SERVING


def test_health_check_unknown_service(channel):
    with pytest.raises(grpc.RpcError) as ei:
        check(channel, "model/no_such_model")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_first_message_and_unknown(channel):
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch",
                                 request_serializer=encode_request,
                                 response_deserializer=decode_status)
    stream = watch("", timeout=CALL_TIMEOUT_S)
    try:
        assert next(stream) == SERVING
    finally:
        stream.cancel()

    stream = watch("model/no_such_model", timeout=CALL_TIMEOUT_S)
    try:
        assert next(stream) == SERVICE_UNKNOWN
    finally:
        stream.cancel()
