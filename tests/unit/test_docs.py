"""The docs say what the code does: docs/api.md is a complete reference (every route and status, the
envelope, each event type at each schema version, the archive, the local routes, the verbs); the
lists that went stale once (tables, flags, projections, figures, prices) are checked against their
sources; and the docs stand alone, citing no document outside the repository."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from typer.main import get_command

from escore.envelope import ENVELOPE_FIELDS
from eventstack.cli import app
from eventstack.topology import TOPOLOGY
from tests.support.projectors import upcasters

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
API = (REPO / "docs" / "api.md").read_text()
README = (REPO / "README.md").read_text()
OWN_DOCS = ["README.md", "docs/api.md", "docs/local.md", "docs/deploy.md", "docs/replay.md"]


def flat(text: str) -> str:
    return " ".join(text.split())


def route_rows() -> dict[str, str]:
    rows = {}
    section = API[API.index("### Every status, per route"):API.index("## Errors")]
    for line in section.splitlines():
        match = re.match(r"\| `([A-Z]+ /[^`]*)` \|(.*)$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_no_document_outside_the_repository_is_cited() -> None:
    for name in OWN_DOCS:
        text = (REPO / name).read_text()
        assert "CONTRACT" not in text and "§" not in text, name


def test_every_route_and_every_status_it_answers() -> None:
    spec = json.loads((REPO / "docs" / "openapi.json").read_text())
    rows = route_rows()
    routes = {f"{r.method} {r.resource}" for s in TOPOLOGY.services for r in s.routes}
    assert set(rows) == routes
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            row = rows[f"{method.upper()} {path}"]
            for status in operation["responses"]:
                assert re.search(rf"\b{status}\b", row), (method, path, status)
            assert f"`{method.upper()} {path.split('?')[0]}" in API


def test_every_error_code_is_explained() -> None:
    for code in ("bad_request", "not_found", "method_not_allowed", "conflict", "handle_taken",
                 "idempotency_key_reused", "idempotency_in_progress", "payload_too_large", "validation_error",
                 "service_unavailable", "emulation_stopped"):
        assert f"`{code}`" in API, code


def test_the_rules_a_client_needs() -> None:
    text = flat(API)
    assert "^[a-z0-9_]{3,30}$" in text  # the handle
    assert "Non-ASCII hashtags are dropped without notice" in text and "#café" in text
    assert "`cursor`" in text and "`next_cursor`" in text and "`limit`" in text
    assert "Idempotency-Key" in text and "X-Correlation-Id" in text


def test_the_envelope_and_each_event_type_at_each_schema_version() -> None:
    from posts.domain import Post
    from profiles.domain import User

    for name in ENVELOPE_FIELDS:
        assert f"| `{name}` |" in API, name
    table = API[API.index("### Event types and their schema versions"):API.index("### On Kinesis")]
    for aggregate in (Post, User):
        for event_type in aggregate.event_types:
            row = next(line for line in table.splitlines() if f"`{event_type.type}`" in line)
            current = upcasters.current_version(event_type.type)
            assert f"{current} (current)" in row, (event_type.type, current)
            for version in range(1, current):
                assert re.search(rf"(^\s*|; ){version}: ", row.split("|")[3]), (event_type.type, version)


def test_the_archive_layout_and_the_local_routes() -> None:
    assert "events/service=<service>/year=YYYY/month=MM/day=DD/hour=HH/<delivery-stream-name>-<...>.gz" in API
    assert "errors/" in API and "de-duplicate by `event_id`" in flat(API)
    for route in ("`GET /_local/status`", "`POST /_local/drain?timeout=SECONDS`", "`GET /openapi.json`"):
        assert route in API


def leaf_commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = sorted(getattr(command, "commands", {}).items())
    if not subs:
        return [path]
    return [leaf for name, sub in subs for leaf in leaf_commands(sub, (*path, name))]


def test_every_verb_and_every_local_flag() -> None:
    root = get_command(app)
    leaves = leaf_commands(root)
    assert {("local",), ("replay",), ("archive", "verify"), ("dlq", "list"), ("dlq", "redrive")} <= set(leaves)
    for path in leaves:
        assert f"`eventstack {' '.join(path)}" in API, path
    local = root.commands["local"]  # type: ignore[attr-defined]
    flags = [p.opts[0] for p in local.params if p.opts[0] != "--help"]
    readme_row = next(line for line in README.splitlines() if line.startswith("| `eventstack local` |"))
    local_doc = (REPO / "docs" / "local.md").read_text()
    api_row = next(line for line in API.splitlines() if line.startswith("| `eventstack local "))
    for flag in flags:
        assert f"`{flag}" in readme_row, flag
        assert f"`{flag}" in local_doc, flag
        assert f"[{flag}" in api_row, flag


def test_every_table_and_projection_is_listed() -> None:
    local_doc = flat((REPO / "docs" / "local.md").read_text())
    names = [s.event_store.logical_name for s in TOPOLOGY.services]
    names += [p.table.logical_name for _, p in TOPOLOGY.projections]
    names += [s.stream_logical_name for s in TOPOLOGY.services]
    for name in names:
        assert f"`{name}`" in local_doc, name
    verbs = API[API.index("## The command line"):]
    for _, projection in TOPOLOGY.projections:
        assert f"`{projection.name}`" in verbs


def test_replay_figures_are_the_measured_ones() -> None:
    measured = json.loads((REPO / "bench" / "results" / "replay.json").read_text())
    fold_rate = measured["fold_1_worker"]["user_profiles"]["events_per_second"]
    floor_rate = measured["floor"]["events_per_second"]
    text = flat((REPO / "docs" / "replay.md").read_text())
    assert f"{fold_rate:,.0f}" in text and f"{floor_rate:,.0f}" in text
    assert f"{measured['ratio_fold_to_floor']:.2f}" in text and f"{measured['ratio_fold_to_floor_cpu']:.2f}" in text
    assert f"{measured['plan']['seconds']:.1f} s" in text
    for run in measured["scaling"]:  # the worker counts, each with its rate
        assert f"{run['workers']} worker(s): {run['events_per_second']:,.0f}" in text


def test_prices_are_the_dated_tables() -> None:
    prices = tomllib.loads((REPO / "bench" / "prices.toml").read_text())
    shard = prices["prices"]["kinesis_shard_hour"]
    deploy = flat((REPO / "docs" / "deploy.md").read_text())
    for text in (deploy, flat(README)):
        assert f"${shard['usd']:.3f} per shard-hour" in text
        assert f"${2 * 730 * shard['usd'] / shard['per']:.2f}" in text  # two streams, one shard each
        assert prices["read_on"] in text
        assert "as I know" not in text and "mid-2025" not in text
    assert "usd" not in prices["prices"]["kinesis_on_demand_stream_hour"]
    assert "not priced" in deploy  # so no number is quoted for it
