"""The audit log on the synthesized shared stack (infra/audit.py): the Glue tables over the archive with
partition projection, the Athena workgroup and its results bucket, and the reader's managed policy."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from escore import naming
from eventstack.topology import TOPOLOGY
from infra import audit
from infra.stages import STAGES
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra


def _one(synth: Synth, resource_type: str) -> tuple[str, dict[str, Any]]:
    found = synth.resources(resource_type, "shared")
    assert len(found) == 1, sorted(found)
    name, resource = next(iter(found.items()))
    return name.rpartition("/")[2], resource


def _tables(synth: Synth) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["TableInput"]["Name"]: r["Properties"]
        for r in synth.resources("AWS::Glue::Table", "shared").values()
    }


def _archive_bucket_id(synth: Synth) -> str:
    for name, resource in synth.resources("AWS::S3::Bucket", "shared").items():
        if resource["Properties"].get("ObjectLockEnabled"):
            return name.rpartition("/")[2]
    raise AssertionError("no archive bucket")


def _results_bucket_id(synth: Synth) -> str:
    for name, resource in synth.resources("AWS::S3::Bucket", "shared").items():
        bucket_name = json.dumps(resource["Properties"].get("BucketName"))
        if f"eventstack-{synth.stage}-audit-" in bucket_name:
            return name.rpartition("/")[2]
    raise AssertionError("no audit results bucket")


def test_database_is_the_stages_audit_database(each: Synth) -> None:
    _, database = _one(each, "AWS::Glue::Database")
    assert database["Properties"]["DatabaseInput"]["Name"] == naming.audit_database(each.stage)
    assert database["Properties"]["CatalogId"] == {"Ref": "AWS::AccountId"}
    for table in _tables(each).values():
        assert table["DatabaseName"] == naming.audit_database(each.stage)


def test_two_tables_over_the_archive_with_the_agreed_names(each: Synth) -> None:
    assert set(_tables(each)) == {naming.AUDIT_TABLE, naming.AUDIT_LINES_TABLE}


@pytest.mark.parametrize("table", [naming.AUDIT_TABLE, naming.AUDIT_LINES_TABLE])
def test_partition_projection_follows_the_archive_layout(each: Synth, table: str) -> None:
    props = _tables(each)[table]["TableInput"]
    assert props["TableType"] == "EXTERNAL_TABLE"
    assert [k["Name"] for k in props["PartitionKeys"]] == ["service", "year", "month", "day", "hour"]
    params = props["Parameters"]
    assert params["projection.enabled"] == "true"
    assert params["projection.service.type"] == "enum"
    assert params["projection.service.values"].split(",") == [s.name for s in TOPOLOGY.services]
    for key, (low, high, digits) in {
        "year": (audit.FIRST_YEAR, audit.LAST_YEAR, 4), "month": (1, 12, 2), "day": (1, 31, 2), "hour": (0, 23, 2)
    }.items():
        assert params[f"projection.{key}.type"] == "integer", key
        assert params[f"projection.{key}.range"] == f"{low},{high}", key
        assert params[f"projection.{key}.digits"] == str(digits), key
    template = params["storage.location.template"]
    archive = _archive_bucket_id(each)
    assert template == {
        "Fn::Join": [
            "",
            [
                "s3://",
                {"Ref": archive},
                "/events/service=${service}/year=${year}/month=${month}/day=${day}/hour=${hour}/",
            ],
        ]
    }
    # the layout Firehose writes (infra/archive.py): the same keys in the same order
    from infra.archive import data_prefix

    firehose = data_prefix(TOPOLOGY, "posts")
    assert firehose.replace("!{timestamp:yyyy}", "${year}").replace("!{timestamp:MM}", "${month}").replace(
        "!{timestamp:dd}", "${day}"
    ).replace("!{timestamp:HH}", "${hour}") == "events/service=posts/year=${year}/month=${month}/day=${day}/hour=${hour}/"
    storage = props["StorageDescriptor"]
    assert storage["Location"] == {"Fn::Join": ["", ["s3://", {"Ref": archive}, "/events/"]]}
    assert storage["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    assert storage["Compressed"] is True


def test_events_raw_reads_the_envelope_with_the_openx_serde(each: Synth) -> None:
    storage = _tables(each)[naming.AUDIT_TABLE]["TableInput"]["StorageDescriptor"]
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert storage["SerdeInfo"]["Parameters"]["ignore.malformed.json"] == "false"
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == [
        ("event_id", "string"), ("stream_id", "string"), ("version", "bigint"), ("type", "string"),
        ("schema_version", "int"), ("occurred_at", "string"), ("data", "string"), ("metadata", "string"),
    ]


def test_events_lines_keeps_each_line_whole(each: Synth) -> None:
    storage = _tables(each)[naming.AUDIT_LINES_TABLE]["TableInput"]["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == [("line", "string")]
    serde = storage["SerdeInfo"]
    assert serde["SerializationLibrary"] == "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
    assert serde["Parameters"]["field.delim"] == "\u0001"
    # the delimiter never occurs in an archived line: compact JSON escapes control characters
    envelope = {"event_id": "e", "data": {"text": "a\u0001b\tc"}, "metadata": {"correlation_id": "\u0001"}}
    line = orjson.dumps(envelope)
    assert b"\x01" not in line and b"\\u0001" in line


def test_workgroup_enforces_results_encryption_engine_metrics_and_the_stage_cutoff(each: Synth) -> None:
    _, workgroup = _one(each, "AWS::Athena::WorkGroup")
    props = workgroup["Properties"]
    assert props["Name"] == naming.audit_workgroup(each.stage)
    assert props["State"] == "ENABLED"
    config = props["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["PublishCloudWatchMetricsEnabled"] is True
    assert config["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}
    assert config["BytesScannedCutoffPerQuery"] == STAGES[each.stage].audit_bytes_scanned_cutoff
    results = config["ResultConfiguration"]
    assert results["EncryptionConfiguration"] == {"EncryptionOption": "SSE_S3"}
    assert results["OutputLocation"] == {"Fn::Join": ["", ["s3://", {"Ref": _results_bucket_id(each)}, "/results/"]]}


def test_results_bucket_is_private_encrypted_tls_only_logged_and_expires(each: Synth) -> None:
    bucket_id = _results_bucket_id(each)
    props = each.template("shared")["Resources"][bucket_id]["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
    }
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "audit/"
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == STAGES[each.stage].audit_results_expiration_days
    assert rule["Status"] == "Enabled" and "Prefix" not in rule  # query results and replay plans alike
    policies = [
        r for r in each.resources("AWS::S3::BucketPolicy", "shared").values() if r["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    (policy,) = policies
    conditions = [s.get("Condition", {}) for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert {"Bool": {"aws:SecureTransport": "false"}} in conditions


def _reader_statements(synth: Synth) -> dict[str, dict[str, Any]]:
    (policy,) = [p for p in synth.resources("AWS::IAM::ManagedPolicy", "shared").values()
                 if p["Properties"]["ManagedPolicyName"] == f"eventstack-{synth.stage}-audit-reader"]
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_reader_policy_is_this_workgroup_these_tables_the_events_prefix_and_the_results_only(each: Synth) -> None:
    statements = _reader_statements(each)
    archive, results = _archive_bucket_id(each), _results_bucket_id(each)
    assert all(s["Effect"] == "Allow" for s in statements.values())
    athena = statements["RunQueriesInTheAuditWorkgroup"]
    assert all(a.startswith("athena:") and "*" not in a for a in athena["Action"])
    assert json.dumps(athena["Resource"]).endswith(f':workgroup/{naming.audit_workgroup(each.stage)}"]]}}')

    glue = statements["ReadTheAuditTables"]
    assert sorted(glue["Action"]) == ["glue:GetDatabase", "glue:GetPartitions", "glue:GetTable", "glue:GetTables"]
    targets = [json.dumps(r) for r in glue["Resource"]]
    database = naming.audit_database(each.stage)
    assert len(targets) == 4
    assert targets[0].endswith(':catalog"]]}')
    assert targets[1].endswith(f':database/{database}"]]}}')
    assert {t.rsplit("/", 1)[1] for t in targets[2:]} == {f'{naming.AUDIT_TABLE}"]]}}', f'{naming.AUDIT_LINES_TABLE}"]]}}'}

    assert statements["ListTheArchiveEvents"]["Condition"] == {"StringLike": {"s3:prefix": ["events/*"]}}
    assert statements["ListTheArchiveEvents"]["Resource"] == {"Fn::GetAtt": [archive, "Arn"]}
    read = statements["ReadTheArchiveEvents"]
    assert _as_list(read["Action"]) == ["s3:GetObject"]
    assert read["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [archive, "Arn"]}, "/events/*"]]}
    write = statements["WriteAndReadResults"]
    assert "s3:PutObject" in write["Action"] and "s3:DeleteObject" not in write["Action"]
    assert write["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [results, "Arn"]}, "/results/*"]]}
    # nothing else: no other service, no other bucket, no '*' resource
    services = {a.split(":")[0] for s in statements.values() for a in _as_list(s["Action"])}
    assert services == {"athena", "glue", "s3"}
    assert all(s["Resource"] != "*" for s in statements.values())
    buckets = {archive, results}
    for statement in statements.values():
        if any(a.startswith("s3:") for a in _as_list(statement["Action"])):
            refs = {
                m for m in json.dumps(statement["Resource"]).split('"') if m.startswith(("Archive", "Audit"))
            }
            assert refs <= buckets, statement["Sid"]
