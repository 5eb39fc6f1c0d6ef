"""The local runtime's HTTP edges over a raw socket (issue 9, defects 6 and 11): what a hostile client
sends below the API handlers, and that every answer is still JSON with an `X-Correlation-Id`."""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.local_stack import LocalStack

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def _connect(stack: LocalStack, timeout: float = 15.0) -> socket.socket:
    url = urlsplit(stack.api)
    return socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=timeout)


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """(status, lower-cased headers, JSON body) of the answer on `sock`: up to its Content-Length, or
    to the end of the connection (the server closes each one)."""
    data = b""
    while True:
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, headers, json.loads(body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def _assert_json_error(status: int, headers: dict[str, str], body: Any, want: int, error: str) -> None:
    assert status == want, (status, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert headers.get("x-correlation-id"), headers
    assert isinstance(body, dict) and body["error"] == error and isinstance(body["message"], str), body


# -- defect 6: a chunked body is not read whole before the size check ----------------------------------
def test_a_chunked_body_over_the_limit_is_refused_without_reading_it_whole(local_stack: LocalStack) -> None:
    """11 MiB of chunks and no final chunk: the runtime stops reading at API Gateway's 10 MiB and answers
    413 at once, instead of waiting for (and holding) the whole body."""
    with _connect(local_stack) as sock:
        sock.sendall(b"POST /posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nX-Correlation-Id: chunky-1\r\n\r\n")
        chunk = b"x" * (64 * 1024)
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        try:
            for _ in range(11 * 16):  # 11 MiB, never terminated
                sock.sendall(framed)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop listening once it has answered
        started = time.monotonic()
        status, headers, body = _read_answer(sock)
    assert time.monotonic() - started < 10
    _assert_json_error(status, headers, body, 413, "payload_too_large")
    assert headers["x-correlation-id"] == "chunky-1"


def test_a_chunked_body_over_64_kib_is_413_and_under_it_is_read(local_stack: LocalStack) -> None:
    def send(payload: bytes) -> tuple[int, dict[str, str], Any]:
        with _connect(local_stack) as sock:
            sock.sendall(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(payload), 1000):
                piece = payload[start:start + 1000]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
            return _read_answer(sock)

    _assert_json_error(*send(b'{"handle": "' + b"x" * (70 * 1024) + b'"}'), 413, "payload_too_large")
    status, headers, body = send(json.dumps({"handle": "chunked_" + str(time.time_ns())[-8:],
                                             "display_name": "Chunked"}).encode())
    assert status == 201 and headers["x-correlation-id"] and body["version"] == 1


def test_a_malformed_chunk_is_a_json_400(local_stack: LocalStack) -> None:
    with _connect(local_stack) as sock:
        sock.sendall(b"POST /posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        _assert_json_error(*_read_answer(sock), 400, "bad_request")


# -- defect 11: every answer is JSON with a correlation id -------------------------------------------
def test_64_kib_of_headers_is_a_json_431_with_a_correlation_id(local_stack: LocalStack) -> None:
    with _connect(local_stack) as sock:
        sock.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024 + 10) + b"\r\n\r\n")
        _assert_json_error(*_read_answer(sock), 431, "headers_too_large")


def test_too_many_headers_and_a_too_long_target_are_json(local_stack: LocalStack) -> None:
    with _connect(local_stack) as sock:
        sock.sendall(b"GET /nope HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n")
        _assert_json_error(*_read_answer(sock), 431, "headers_too_large")
    with _connect(local_stack) as sock:
        sock.sendall(b"GET /" + b"a" * (66 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        _assert_json_error(*_read_answer(sock), 414, "uri_too_long")
    with _connect(local_stack) as sock:
        sock.sendall(b"GET / HTTP/7.0\r\nHost: x\r\n\r\n")  # http.server says 505: a client's input, so 400
        _assert_json_error(*_read_answer(sock), 400, "bad_request")


def test_the_local_routes_answer_with_a_correlation_id(local_stack: LocalStack) -> None:
    status = local_stack.call("GET", "/_local/status", headers={"X-Correlation-Id": "status-1"})
    assert status.status == 200 and status.headers["x-correlation-id"] == "status-1"
    drained = local_stack.call("POST", "/_local/drain?timeout=30")
    assert drained.status == 200 and drained.headers.get("x-correlation-id")
    missing = local_stack.call("GET", "/_local/nope")
    assert missing.status == 404 and missing.headers.get("x-correlation-id")
