"""Start `eventstack local` as a user does (a subprocess on free ports) and talk to it over HTTP."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


@dataclass
class LocalStack:
    process: subprocess.Popen[str]
    api: str
    aws: str
    output: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None, timeout: float = 60) -> Answer:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        all_headers = {"content-type": "application/json"} if data is not None else {}
        all_headers.update(headers or {})
        request = urllib.request.Request(self.api + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                status, payload, got = answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as exc:
            status, payload, got = exc.code, exc.read(), dict(exc.headers)
        return Answer(status, json.loads(payload) if payload else None, {k.lower(): v for k, v in got.items()})

    def drain(self, timeout: float = 60) -> dict[str, Any]:
        answer = self.call("POST", f"/_local/drain?timeout={timeout}", timeout=timeout + 30)
        assert answer.status == 200, answer
        return dict(answer.body)

    def status(self) -> dict[str, Any]:
        return dict(self.call("GET", "/_local/status").body)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.aws, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def event_store(self, service: str) -> list[dict[str, Any]]:
        """Every envelope in the service's event store."""
        table = self.status()["tables"][f"{service}_events"]
        items: list[dict[str, Any]] = []
        for page in self.client("dynamodb").get_paginator("scan").paginate(TableName=table):
            items.extend(page["Items"])
        return [json.loads(i["envelope"]["S"]) for i in items if i.get("kind", {}).get("S") == "event"]

    def archive(self, prefix: str = "events/") -> list[dict[str, Any]]:
        """Every line of every archive object under `prefix` (duplicates kept)."""
        s3, bucket = self.client("s3"), self.status()["archive_bucket"]
        lines: list[dict[str, Any]] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                lines.extend(json.loads(line) for line in body.split(b"\n") if line.strip())
        return lines

    def archive_keys(self) -> list[str]:
        s3, bucket = self.client("s3"), self.status()["archive_bucket"]
        return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])]

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def _end_with_this_process() -> None:
    """In the child: Ctrl-C it when the test process dies, so a killed test run leaves no runtime behind
    (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # 1: PR_SET_PDEATHSIG


def start_local(*args: str, cwd: Path = REPO, environ: dict[str, str] | None = None) -> LocalStack:
    port, aws_port = free_port(), free_port()
    env = {k: v for k, v in (environ or os.environ).items() if not k.startswith("AWS_ENDPOINT")}
    process = subprocess.Popen(
        [sys.executable, "-m", "eventstack", "local", "--port", str(port), "--aws-port", str(aws_port), *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_end_with_this_process,
    )
    stack = LocalStack(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{aws_port}")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"eventstack local exited {process.returncode}: {process.stdout.read()}")  # type: ignore[union-attr]
        try:
            if stack.call("GET", "/_local/status", timeout=2).status == 200:
                return stack
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"eventstack local did not serve within {START_TIMEOUT} s")
        time.sleep(0.2)
