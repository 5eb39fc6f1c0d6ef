"""Issue 9, defect 5: handler clients (and so `eventstack dlq redrive`, which builds the handlers in
its own process) honour AWS_REGION, not only AWS_DEFAULT_REGION."""

from __future__ import annotations

import pytest

from escore.runtime import aws_client

pytestmark = pytest.mark.unit


def test_aws_region_alone_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert aws_client("sqs").meta.region_name == "eu-west-1"


def test_aws_region_wins_over_the_default_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert aws_client("dynamodb").meta.region_name == "eu-central-1"


def test_without_aws_region_boto3_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert aws_client("kinesis").meta.region_name == "ap-south-1"


def test_the_publisher_s_own_kinesis_clients_honour_aws_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """`eventstack dlq redrive posts-publisher` builds the publisher in the CLI's process: its writer and
    reader (made apart, for their retry settings) must find the region as every other client does."""
    from publisher.handler import kinesis_clients

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    writer, reader = kinesis_clients()
    assert writer.meta.region_name == reader.meta.region_name == "eu-west-3"
