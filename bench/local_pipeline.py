"""End-to-end throughput and latency of the local pipeline (`eventstack local`).

Starts the runtime as `make run` does (a subprocess, default settings but free ports), then:
1. throughput: CLIENTS threads send commands (POST /posts, with a PATCH of an earlier post every
   fourth) for DURATION seconds; then one drain. Commands per second sustained end to end =
   commands answered 2xx / (first command .. the drain's return, i.e. every event published,
   projected and archived).
2. latency: one client, one at a time: POST /posts, then GET /users/{id} every few milliseconds
   until post_count shows it. p50 and p95 of that time (it includes the projector mapping's
   batching window, batching_window_seconds in eventstack/topology.py).
Results: bench/results/local_pipeline.json and .md.

    python -m bench.local_pipeline [--duration 20] [--clients 8] [--samples 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(api: str, method: str, path: str, body: Any = None, timeout: float = 120) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api + path, data=data, method=method,
                                     headers={"content-type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Runtime:
    def __init__(self, *args: str):
        self.port, self.aws_port = _free_port(), _free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventstack", "local", "--port", str(self.port), "--aws-port",
             str(self.aws_port), *args],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        while True:
            try:
                if call(self.api, "GET", "/_local/status", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError("eventstack local did not start")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def register(api: str) -> str:
    status, body = call(api, "POST", "/users", {"handle": "b_" + uuid.uuid4().hex[:12], "display_name": "Bench"})
    assert status == 201, body
    return str(body["user_id"])


def throughput(api: str, duration: float, clients: int) -> dict[str, Any]:
    users = [register(api) for _ in range(clients)]
    call(api, "POST", "/_local/drain?timeout=60")
    counts = [0] * clients
    errors = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop_at = time.monotonic() + duration

    def client(index: int) -> None:
        mine: list[str] = []
        while time.monotonic() < stop_at:
            started = time.monotonic()
            if mine and counts[index] % 4 == 3:
                status, _ = call(api, "PATCH", f"/posts/{mine[-1]}", {"text": "edited", "expected_version": 1})
                mine.pop()
            else:
                status, body = call(api, "POST", "/posts", {"author_id": users[index], "text": "bench"})
                if status == 201:
                    mine.append(body["post_id"])
            latencies[index].append(time.monotonic() - started)
            if 200 <= status < 300:
                counts[index] += 1
            else:
                errors[index] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = time.monotonic()
    status, _ = call(api, "POST", "/_local/drain?timeout=300", timeout=330)
    drained = time.monotonic()
    assert status == 200, "drain did not finish"
    commands = sum(counts)
    all_latencies = sorted(x for per in latencies for x in per)
    return {
        "clients": clients,
        "commands": commands,
        "errors": sum(errors),
        "api_seconds": round(answered - started, 2),
        "drain_seconds": round(drained - answered, 2),
        "commands_per_second_end_to_end": round(commands / (drained - started), 1),
        "commands_per_second_api": round(commands / (answered - started), 1),
        "api_p50_ms": round(1000 * _percentile(all_latencies, 50), 1),
        "api_p95_ms": round(1000 * _percentile(all_latencies, 95), 1),
    }


def latency(api: str, samples: int) -> dict[str, Any]:
    user = register(api)
    call(api, "POST", "/_local/drain?timeout=60")
    times: list[float] = []
    for i in range(samples):
        _, profile = call(api, "GET", f"/users/{user}")
        before = profile["post_count"]
        started = time.monotonic()
        status, _ = call(api, "POST", "/posts", {"author_id": user, "text": f"latency {i}"})
        assert status == 201
        while True:
            _, profile = call(api, "GET", f"/users/{user}")
            if profile["post_count"] > before:
                break
            if time.monotonic() - started > 60:
                raise RuntimeError("post_count did not move within 60 s")
            time.sleep(0.01)
        times.append(time.monotonic() - started)
    times.sort()
    return {
        "samples": samples,
        "p50_ms": round(1000 * _percentile(times, 50)),
        "p95_ms": round(1000 * _percentile(times, 95)),
        "min_ms": round(1000 * times[0]),
        "max_ms": round(1000 * times[-1]),
        "mean_ms": round(1000 * statistics.fmean(times)),
    }


def idle_cpu(runtime: Runtime, seconds: float = 10.0) -> float:
    call(runtime.api, "POST", "/_local/drain?timeout=60")
    time.sleep(1.0)
    before = runtime.cpu_seconds()
    time.sleep(seconds)
    return round(100 * (runtime.cpu_seconds() - before) / seconds, 1)


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def run(duration: float = 20.0, clients: int = 8, samples: int = 40) -> dict[str, Any]:
    runtime = Runtime()
    try:
        result = {
            "bench": "local_pipeline",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
            "start_seconds": round(runtime.start_seconds, 1),
            "idle_cpu_percent_of_one_core": idle_cpu(runtime),
            "latency_post_to_post_count": latency(runtime.api, samples),
            "throughput": throughput(runtime.api, duration, clients),
        }
    finally:
        runtime.stop()
    write(result)
    return result


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "local_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    t, lat = result["throughput"], result["latency_post_to_post_count"]
    (RESULTS / "local_pipeline.md").write_text(
        "# Local pipeline (`eventstack local`)\n\n"
        f"Measured {result['when']} by `python -m bench.local_pipeline` on {result['machine']['cpus']} CPUs "
        f"(load average at start {result['machine']['load_average_at_start']}).\n\n"
        "| measure | value |\n|---|---|\n"
        f"| commands/s sustained end to end ({t['clients']} clients, until drained) | {t['commands_per_second_end_to_end']} |\n"
        f"| commands/s answered by the API | {t['commands_per_second_api']} |\n"
        f"| commands (errors) | {t['commands']} ({t['errors']}) |\n"
        f"| API latency p50 / p95 under load | {t['api_p50_ms']} ms / {t['api_p95_ms']} ms |\n"
        f"| drain after the load | {t['drain_seconds']} s |\n"
        f"| POST /posts to post_count, p50 / p95 ({lat['samples']} samples) | {lat['p50_ms']} ms / {lat['p95_ms']} ms |\n"
        f"| start-up until the API answers | {result['start_seconds']} s |\n"
        f"| idle CPU | {result['idle_cpu_percent_of_one_core']} % of one core |\n\n"
        "The POST-to-post_count time includes the projector mappings' batching window "
        "(`batching_window_seconds`, 1 s in eventstack/topology.py), as on AWS.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args(argv)
    result = run(args.duration, args.clients, args.samples)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
