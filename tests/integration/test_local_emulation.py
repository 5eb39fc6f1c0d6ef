"""The local runtime's emulation: what it creates agrees with the topology (as the CDK templates do,
tests/infra/test_topology_agreement.py), and its fix of moto's TransactWriteItems rollback."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from eventstack.local.emulation import MotoEmulation, create_resources
from eventstack.local.plan import build_plan
from eventstack.topology import TOPOLOGY

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def moto() -> Any:
    emulation = MotoEmulation(port=0)
    emulation.start()
    yield emulation
    emulation.stop()


def test_the_emulation_creates_exactly_what_the_topology_declares(moto: Any) -> None:
    plan = build_plan(TOPOLOGY)
    resources = create_resources(plan, moto.client)
    dynamodb, kinesis, sqs, s3 = (moto.client(s) for s in ("dynamodb", "kinesis", "sqs", "s3"))

    declared = [s.event_store for s in TOPOLOGY.services] + [p.table for _, p in TOPOLOGY.projections]
    assert sorted(plan.table_names) == sorted(t.logical_name for t in declared)
    for table in declared:
        description = dynamodb.describe_table(TableName=plan.table_names[table.logical_name])["Table"]
        keys = {k["KeyType"]: k["AttributeName"] for k in description["KeySchema"]}
        assert keys["HASH"] == table.partition_key[0]
        assert keys.get("RANGE") == (table.sort_key[0] if table.sort_key else None)
        types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
        assert types[table.partition_key[0]] == table.partition_key[1]
        if table.stream:
            assert description["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
        else:
            assert "StreamSpecification" not in description
        ttl = dynamodb.describe_time_to_live(TableName=description["TableName"])["TimeToLiveDescription"]
        if table.ttl_attribute:
            assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": table.ttl_attribute}

    assert plan.streams == {s.name: s.stream_logical_name for s in TOPOLOGY.services}
    for stream in plan.streams.values():
        summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        assert summary["StreamStatus"] == "ACTIVE" and summary["StreamARN"] == resources.stream_arns[stream]

    expected = {(f"{s.name}-publisher", f"dynamodb:{s.event_store.logical_name}", s.publisher_function_name,
                 s.publisher_mapping) for s in TOPOLOGY.services}
    expected |= {(sub.name, f"kinesis:{TOPOLOGY.service(sub.source).stream_logical_name}",
                  sub.projection.function_name, sub.projection.mapping) for sub in TOPOLOGY.subscriptions}
    assert {(m.name, m.source_label, m.function, m.settings) for m in plan.mappings} == expected
    queues = {url.rsplit("/", 1)[1] for url in sqs.list_queues()["QueueUrls"]}
    assert {m.dlq for m in plan.mappings} <= queues
    assert set(resources.queue_urls) == {m.dlq for m in plan.mappings}
    assert plan.archive_bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}

    functions = {f.name: f for f in plan.functions}
    for service in TOPOLOGY.services:
        assert functions[service.api_function_name].handler == service.api_handler
        assert functions[service.publisher_function_name].env["EVENT_STREAM_NAME"] == service.stream_logical_name
    for _, projection in TOPOLOGY.projections:
        env = functions[projection.function_name].env
        assert env[f"{projection.name.upper()}_TABLE"] == plan.table_names[projection.name]
    assert set(plan.routes) == {(r.method, r.resource) for s in TOPOLOGY.services for r in s.routes}


def _table(moto: Any) -> tuple[str, str]:
    dynamodb = moto.client("dynamodb")
    name = f"t-{uuid.uuid4().hex[:8]}"
    arn = dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]["LatestStreamArn"]
    return name, arn


def _stream_records(moto: Any, arn: str) -> list[dict[str, Any]]:
    streams = moto.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return list(streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"])


def test_a_failed_transaction_leaves_no_item_and_no_stream_record(moto: Any) -> None:
    dynamodb = moto.client("dynamodb")
    name, arn = _table(moto)
    dynamodb.put_item(TableName=name, Item={"pk": {"S": "claim"}, "sk": {"S": "0"}, "n": {"N": "1"}})
    dynamodb.put_item(TableName=name, Item={"pk": {"S": "counter"}, "sk": {"S": "0"}, "n": {"N": "5"}})
    with pytest.raises(dynamodb.exceptions.TransactionCanceledException):
        dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {"pk": {"S": "event"}, "sk": {"S": "1"}}}},
            {"Update": {"TableName": name, "Key": {"pk": {"S": "counter"}, "sk": {"S": "0"}},
                        "UpdateExpression": "ADD n :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            {"Put": {"TableName": name, "Item": {"pk": {"S": "claim"}, "sk": {"S": "0"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
    items = {i["pk"]["S"]: i for i in dynamodb.scan(TableName=name)["Items"]}
    assert set(items) == {"claim", "counter"}
    assert items["counter"]["n"] == {"N": "5"} and items["claim"]["n"] == {"N": "1"}
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in _stream_records(moto, arn)] == ["claim", "counter"]
    # and the table and its stream go on as before
    dynamodb.transact_write_items(TransactItems=[
        {"Put": {"TableName": name, "Item": {"pk": {"S": "event"}, "sk": {"S": "1"}}}},
    ])
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in _stream_records(moto, arn)] == ["claim", "counter", "event"]


def test_a_transaction_costs_the_same_whatever_the_table_holds(moto: Any) -> None:
    dynamodb = moto.client("dynamodb")
    name, _ = _table(moto)

    def append(n: int) -> float:
        started = time.perf_counter()
        dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {"pk": {"S": f"s{n}"}, "sk": {"S": "1"}, "body": {"S": "x" * 500}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
        return time.perf_counter() - started

    small = min(append(i) for i in range(5))
    for start in range(5, 2000, 25):
        dynamodb.batch_write_item(RequestItems={name: [
            {"PutRequest": {"Item": {"pk": {"S": f"s{n}"}, "sk": {"S": "1"}, "body": {"S": "x" * 500}}}}
            for n in range(start, start + 25)
        ]})
    large = min(append(i) for i in range(3000, 3005))
    assert large < small * 5 + 0.02  # moto alone deep-copies the table: ~100x slower at 2,000 items
