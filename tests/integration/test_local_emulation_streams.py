"""The emulation's DynamoDB Streams reads are serialized with its DynamoDB writes.

moto writes a transaction's items one by one and takes them back when a later condition fails
(eventstack.local.emulation.TransactionRollback drops their stream records then). A change-stream
read that runs in between would see a record of a transaction that never happened, and the
publisher would relay a phantom event (one event in the archive that is in no store). So a
GetRecords waits for the write in progress, as DynamoDB's atomic transactions make it look.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from moto.dynamodb.models import DynamoDBBackend

from eventstack.local.emulation import MotoEmulation

pytestmark = pytest.mark.integration


def test_a_change_stream_read_never_sees_a_failed_transaction_s_write(monkeypatch: pytest.MonkeyPatch) -> None:
    emulation = MotoEmulation("127.0.0.1", 0)
    emulation.start()
    try:
        dynamodb, streams = emulation.client("dynamodb"), emulation.client("dynamodbstreams")
        table = dynamodb.create_table(
            TableName="phantoms", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )["TableDescription"]
        dynamodb.put_item(TableName="phantoms", Item={"k": {"S": "taken"}})
        shard = streams.describe_stream(StreamArn=table["LatestStreamArn"])["StreamDescription"]["Shards"][0]
        iterator = streams.get_shard_iterator(StreamArn=table["LatestStreamArn"], ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]

        writing, release = threading.Event(), threading.Event()
        original = DynamoDBBackend.put_item

        def slow_put(backend: Any, table_name: str, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            done = original(backend, table_name, item_attrs, *args, **kwargs)
            if item_attrs.get("k") == {"S": "phantom"}:
                writing.set()  # written, and its stream record added; the failing check comes next
                release.wait(10)
            return done

        monkeypatch.setattr(DynamoDBBackend, "put_item", slow_put)

        def transact() -> None:
            with pytest.raises(dynamodb.exceptions.TransactionCanceledException):
                dynamodb.transact_write_items(TransactItems=[
                    {"Put": {"TableName": "phantoms", "Item": {"k": {"S": "phantom"}}}},
                    {"ConditionCheck": {"TableName": "phantoms", "Key": {"k": {"S": "taken"}},
                                        "ConditionExpression": "attribute_not_exists(k)"}},
                ])

        writer = threading.Thread(target=transact)
        writer.start()
        assert writing.wait(10)
        read: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: read.extend(streams.get_records(ShardIterator=iterator)["Records"]))
        reader.start()
        reader.join(1.0)  # it must wait for the transaction in progress
        waited = reader.is_alive()
        release.set()
        writer.join(10)
        reader.join(10)
        keys = [r["dynamodb"]["Keys"]["k"]["S"] for r in read]
        assert keys == ["taken"], keys  # never the failed transaction's "phantom"
        assert waited
    finally:
        emulation.stop()
