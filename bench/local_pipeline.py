"""End-to-end throughput and latency of the local pipeline (`eventstack local`).

Starts the runtime as `make run` does (a subprocess, default settings but free ports), then:
1. latency: one client, one at a time: POST /posts, then GET /users/{id} every few milliseconds
   until post_count shows it. p50 and p95 of that time, printed beside the projector mappings'
   batching window (batching_window_seconds in eventstack/topology.py), which it includes.
2. throughput, at 1, 2, 4 and 8 clients in turn, each on a runtime of its own started afresh (so
   every level starts from empty tables: moto's costs grow with a table's size): the clients
   (threads of this process, one keep-alive connection each) send commands (POST /posts, with a
   PATCH of an earlier post every fourth) for DURATION seconds; then one drain. Commands per second sustained end to end =
   commands answered 2xx / (first command .. the drain's return, i.e. every event published,
   projected and archived). Also the API's latency p50/p95 and the CPU each process used meanwhile
   (the runtime's main process, the moto child, the API workers, and this load generator), in % of
   one core: where the ceiling is.
Results: bench/results/local_pipeline.json and .md.

    python -m bench.local_pipeline [--duration 15] [--clients 1,2,4,8] [--samples 40] [--api-workers N]
                                   [--baseline earlier.json --baseline-label WHAT]
"""

from __future__ import annotations

import argparse
import http.client
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
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CLIENT_LEVELS = (1, 2, 4, 8)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(api: str, method: str, path: str, body: Any = None, timeout: float = 120) -> tuple[int, Any]:
    """One request on a connection of its own (the benchmarks' HTTP helper; bench/cost.py uses it too)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api + path, data=data, method=method,
                                     headers={"content-type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Connection:
    """One client's keep-alive connection (http.client), reopened when the server closes it: the load
    generator shares the machine's cores with what it measures, so it should cost as little as it can."""

    def __init__(self, api: str, timeout: float = 120):
        parts = urlsplit(api)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(*self._address, timeout=self._timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                answer = self._conn.getresponse()
                payload = answer.read()
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                self.close()
                if attempt == 2:
                    raise
                continue
            if answer.will_close:
                self.close()
            return answer.status, json.loads(payload or b"null")
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    """`root`'s children, their children, ... (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def cpu_seconds(pid: int) -> float:
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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

    def role(self, pid: int) -> str:
        if pid == self.process.pid:
            return "runtime"
        line = _cmdline(pid)
        if "moto_process" in line:
            return "emulation"
        if "eventstack.local.workers" in line:
            return "api_workers"
        return "other"

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of the runtime's process tree, by role (exited processes not counted)."""
        totals = {"runtime": cpu_seconds(self.process.pid), "emulation": 0.0, "api_workers": 0.0, "other": 0.0}
        for pid in descendants(self.process.pid):
            totals[self.role(pid)] += cpu_seconds(pid)
        return totals

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_role().values())


def _cpu_percent(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    return {role: round(100 * max(0.0, after[role] - before.get(role, 0.0)) / seconds, 1)
            for role in after if after[role] or before.get(role)}


def register(api: str) -> str:
    status, body = call(api, "POST", "/users", {"handle": "b_" + uuid.uuid4().hex[:12], "display_name": "Bench"})
    assert status == 201, body
    return str(body["user_id"])


def throughput(runtime: Runtime, duration: float, clients: int) -> dict[str, Any]:
    api = runtime.api
    users = [register(api) for _ in range(clients)]
    call(api, "POST", "/_local/drain?timeout=60")
    counts = [0] * clients
    errors = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop_at = time.monotonic() + duration

    def client(index: int) -> None:
        connection = Connection(api)
        mine: list[str] = []
        try:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                if mine and counts[index] % 4 == 3:
                    status, _ = connection.call("PATCH", f"/posts/{mine[-1]}", {"text": "edited", "expected_version": 1})
                    mine.pop()
                else:
                    status, body = connection.call("POST", "/posts", {"author_id": users[index], "text": "bench"})
                    if status == 201:
                        mine.append(body["post_id"])
                latencies[index].append(time.monotonic() - started)
                if 200 <= status < 300:
                    counts[index] += 1
                else:
                    errors[index] += 1
        finally:
            connection.close()

    cpu_before, own_before = runtime.cpu_by_role(), time.process_time()
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = time.monotonic()
    status, _ = call(api, "POST", "/_local/drain?timeout=300", timeout=330)
    drained = time.monotonic()
    cpu_after, own_after = runtime.cpu_by_role(), time.process_time()
    assert status == 200, "drain did not finish"
    commands = sum(counts)
    all_latencies = sorted(x for per in latencies for x in per)
    cpu = _cpu_percent(cpu_before, cpu_after, drained - started)
    cpu["load_generator"] = round(100 * (own_after - own_before) / (drained - started), 1)
    used = {role: after - cpu_before.get(role, 0.0) for role, after in cpu_after.items()}
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
        "cpu_percent_of_one_core": cpu,
        # CPU per command answered, by process and in all (the load generator left out)
        "cpu_ms_per_command": {
            **{role: round(1000 * seconds / max(1, commands), 2) for role, seconds in used.items() if seconds > 0},
            "all": round(1000 * sum(used.values()) / max(1, commands), 2),
        },
    }


def latency(api: str, samples: int) -> dict[str, Any]:
    user = register(api)
    call(api, "POST", "/_local/drain?timeout=60")
    connection = Connection(api)
    times: list[float] = []
    for i in range(samples):
        _, profile = connection.call("GET", f"/users/{user}")
        before = profile["post_count"]
        started = time.monotonic()
        status, _ = connection.call("POST", "/posts", {"author_id": user, "text": f"latency {i}"})
        assert status == 201
        while True:
            _, profile = connection.call("GET", f"/users/{user}")
            if profile["post_count"] > before:
                break
            if time.monotonic() - started > 60:
                raise RuntimeError("post_count did not move within 60 s")
            time.sleep(0.01)
        times.append(time.monotonic() - started)
    connection.close()
    times.sort()
    return {
        "samples": samples,
        "p50_ms": round(1000 * _percentile(times, 50)),
        "p95_ms": round(1000 * _percentile(times, 95)),
        "min_ms": round(1000 * times[0]),
        "max_ms": round(1000 * times[-1]),
        "mean_ms": round(1000 * statistics.fmean(times)),
    }


def batching_window_seconds() -> dict[str, int]:
    """The batching window of each projector mapping (what POST -> post_count waits for, at least)."""
    from eventstack.topology import TOPOLOGY

    return {p.function_name: p.mapping.batching_window_seconds for _, p in TOPOLOGY.projections}


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


def run(duration: float = 15.0, clients: tuple[int, ...] = CLIENT_LEVELS, samples: int = 40,
        api_workers: int | None = None, baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    args = ("--api-workers", str(api_workers)) if api_workers is not None else ()
    load_average = [round(x, 2) for x in os.getloadavg()]
    runtime = Runtime(*args)
    try:
        status = call(runtime.api, "GET", "/_local/status")[1]
        workers = (status.get("api_workers") or {}).get("count") if isinstance(status, dict) else None
        result: dict[str, Any] = {
            "bench": "local_pipeline",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average_at_start": load_average},
            "api_workers": workers,
            "start_seconds": round(runtime.start_seconds, 1),
            "idle_cpu_percent_of_one_core": idle_cpu(runtime),
            "batching_window_seconds": batching_window_seconds(),
            "latency_post_to_post_count": latency(runtime.api, samples),
        }
    finally:
        runtime.stop()
    levels = []
    for n in clients:
        runtime = Runtime(*args)
        try:
            levels.append(throughput(runtime, duration, n))
        finally:
            runtime.stop()
    result["throughput"] = levels
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if baseline is not None:
        result["baseline"] = baseline
    write(result)
    return result


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "local_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "local_pipeline.md").write_text(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    lat, levels = result["latency_post_to_post_count"], result["throughput"]
    windows = sorted(set(result["batching_window_seconds"].values()))
    window = " / ".join(f"{w} s" for w in windows)
    workers = result.get("api_workers")
    roles = [("runtime", "runtime main process"), ("emulation", "moto child"), ("api_workers", "API workers"),
             ("load_generator", "load generator (this bench)")]
    lines = [
        "# Local pipeline (`eventstack local`)",
        "",
        f"Measured {result['when']} by `python -m bench.local_pipeline` on {result['machine']['cpus']} CPUs "
        f"(load average {result['machine']['load_average_at_start']} at start, "
        f"{result.get('load_average_at_end')} at end), "
        + (f"{workers} API worker processes." if workers else "API handlers in the runtime's process."),
        "",
        "| clients | commands/s end to end (until drained) | commands/s answered | commands (errors) "
        "| API p50 / p95 | drain after the load |",
        "|---|---|---|---|---|---|",
        *(f"| {t['clients']} | {t['commands_per_second_end_to_end']} | {t['commands_per_second_api']} "
          f"| {t['commands']} ({t['errors']}) | {t['api_p50_ms']} ms / {t['api_p95_ms']} ms | {t['drain_seconds']} s |"
          for t in levels),
        "",
        "Each client count ran on a runtime started afresh. CPU used during each load (from its first "
        "command to the drain's return), in % of one core:",
        "",
        "| clients | " + " | ".join(label for _, label in roles) + " |",
        "|---|" + "---|" * len(roles),
        *(f"| {t['clients']} | " + " | ".join(str(t['cpu_percent_of_one_core'].get(role, 0.0)) for role, _ in roles)
          + " |" for t in levels),
        "",
        "CPU per command (ms; the runtime's processes, not the load generator), and the rate the emulation "
        "could sustain with a core to itself at that cost (1000 / its ms per command):",
        "",
        "| clients | runtime main process | moto child | API workers | all | moto ceiling, commands/s |",
        "|---|---|---|---|---|---|",
        *(f"| {t['clients']} | {t['cpu_ms_per_command'].get('runtime', 0)} | {t['cpu_ms_per_command'].get('emulation', 0)} "
          f"| {t['cpu_ms_per_command'].get('api_workers', 0)} | {t['cpu_ms_per_command']['all']} "
          f"| {round(1000 / t['cpu_ms_per_command']['emulation']) if t['cpu_ms_per_command'].get('emulation') else '-'} |"
          for t in levels),
        "",
        *_ceiling(result),
        *_baseline(result),
        "| measure | value |",
        "|---|---|",
        f"| POST /posts to post_count, p50 / p95 ({lat['samples']} samples, one client) "
        f"| {lat['p50_ms']} ms / {lat['p95_ms']} ms, beside a batching window of {window} |",
        f"| start-up until the API answers | {result['start_seconds']} s |",
        f"| idle CPU (the runtime and its children) | {result['idle_cpu_percent_of_one_core']} % of one core |",
        "",
        "The POST-to-post_count time includes the projector mappings' batching window "
        "(`batching_window_seconds` in eventstack/topology.py), as on AWS.",
        "",
    ]
    return "\n".join(lines)


def _baseline(result: dict[str, Any]) -> list[str]:
    """The same figures from an earlier result (--baseline), level by level."""
    base = result.get("baseline")
    if not base:
        return []
    before = {t["clients"]: t for t in base["throughput"]}
    lines = [f"Beside the baseline ({base.get('label') or 'an earlier run'}, measured {base['when']}, load average "
             f"{base['machine']['load_average_at_start']} at start):", "",
             "| clients | commands/s end to end, baseline | now | API p50, baseline | now |", "|---|---|---|---|---|"]
    for t in result["throughput"]:
        b = before.get(t["clients"])
        if b:
            lines.append(f"| {t['clients']} | {b['commands_per_second_end_to_end']} | {t['commands_per_second_end_to_end']} "
                         f"| {b['api_p50_ms']} ms | {t['api_p50_ms']} ms |")
    return [*lines, ""]


def _ceiling(result: dict[str, Any]) -> list[str]:
    """Where the ceiling is, from the most loaded level's CPU per command."""
    top = max(result["throughput"], key=lambda t: t["clients"])
    per = top["cpu_ms_per_command"]
    cpus = result["machine"]["cpus"] or 1
    lines = [f"Where the ceiling is: at {top['clients']} clients the runtime used {per['all']} ms of CPU per "
             f"command in all, which caps {cpus} cores near {round(cpus * 1000 / per['all'])} commands/s however "
             "the work is spread"]
    if per.get("emulation"):
        lines[0] += (f"; the moto child alone, one Python process serving every AWS call, used {per['emulation']} ms "
                     f"per command: near {round(1000 / per['emulation'])} commands/s with a core to itself")
    lines[0] += ". Other load on the machine (the load averages above) takes its share of the cores too."
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load at each client count")
    parser.add_argument("--clients", default=",".join(map(str, CLIENT_LEVELS)),
                        help="client counts, comma-separated (default 1,2,4,8)")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--api-workers", type=int, default=None,
                        help="passed to eventstack local (default: its own default)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="an earlier local_pipeline.json to compare with, level by level")
    parser.add_argument("--baseline-label", default=None, help="what the baseline was, e.g. a commit")
    args = parser.parse_args(argv)
    levels = tuple(int(n) for n in args.clients.split(",") if n.strip())
    baseline = None
    if args.baseline is not None:
        baseline = json.loads(args.baseline.read_text())
        baseline.pop("baseline", None)
        baseline["label"] = args.baseline_label
    result = run(args.duration, levels, args.samples, args.api_workers, baseline=baseline)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
