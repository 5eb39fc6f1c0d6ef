"""The notifications stack (infra/notifications.py): the topic, its encryption, the one publish grant, the env."""

from __future__ import annotations

import json
from typing import Any

import pytest

from escore import naming
from eventstack.topology import TOPOLOGY
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra

PROJECTION = "user_notifications"


def _topic(synth: Synth) -> tuple[str, dict[str, Any]]:
    topics = synth.resources("AWS::SNS::Topic", "notifications")
    assert len(topics) == 1, sorted(topics)
    name, topic = next(iter(topics.items()))
    return name.rpartition("/")[2], topic


def _projector(synth: Synth) -> dict[str, Any]:
    functions = [r for r in synth.resources("AWS::Lambda::Function", "notifications").values()
                 if r["Properties"]["FunctionName"] == naming.physical(synth.stage, naming.projector_function(PROJECTION))]
    assert len(functions) == 1
    return functions[0]


def _statements(synth: Synth) -> list[dict[str, Any]]:
    policies = synth.resources("AWS::IAM::Policy", "notifications").values()
    return [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]


def test_the_topology_declares_one_notifying_projection() -> None:
    _, projection = TOPOLOGY.projection(PROJECTION)
    assert projection.notifies and projection.topic == "user_notifications-notifications"
    assert [p.name for _, p in TOPOLOGY.projections if p.notifies] == [PROJECTION]


def test_the_topic_is_named_encrypted_and_tls_only(each: Synth) -> None:
    logical_id, topic = _topic(each)
    props = topic["Properties"]
    assert props["TopicName"] == f"eventstack-{each.stage}-user_notifications-notifications"
    key = json.dumps(props["KmsMasterKeyId"])  # the alias' ARN in the stack's account and region
    assert ":kms:" in key and key.endswith(':alias/aws/sns"]]}'), key
    policies = each.resources("AWS::SNS::TopicPolicy", "notifications").values()
    denies = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]
              if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert denies and all(json.dumps(s["Resource"]).count(logical_id) for s in denies)
    # the stage's topics: the shared alarm topic, and this one
    assert len(each.resources("AWS::SNS::Topic")) == 2


def test_only_the_projector_may_publish_and_only_to_that_topic(each: Synth) -> None:
    logical_id, _ = _topic(each)
    publishes = [s for s in _statements(each) if "sns:Publish" in json.dumps(s["Action"])]
    assert len(publishes) == 1, publishes
    statement = publishes[0]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sns:Publish"
    assert statement["Resource"] == {"Ref": logical_id}  # that topic's ARN, no wildcard
    projector_role = _projector(each)["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [p for p in each.resources("AWS::IAM::Policy", "notifications").values()
                if statement in p["Properties"]["PolicyDocument"]["Statement"]]
    assert [p["Properties"]["Roles"] for p in policies] == [[{"Ref": projector_role}]]
    # no function of another stack may publish to it, nor anything to any other topic from this stack
    others = [s for name, p in each.resources("AWS::IAM::Policy").items() if "/notifications" not in name
              and not name.startswith(f"eventstack-{each.stage}-notifications/")
              for s in p["Properties"]["PolicyDocument"]["Statement"] if logical_id in json.dumps(s)]
    assert others == []


def test_the_projector_finds_the_topic_in_its_environment(each: Synth) -> None:
    logical_id, _ = _topic(each)
    variables = _projector(each)["Properties"]["Environment"]["Variables"]
    assert variables[naming.ENV_NOTIFIER] == "sns"
    assert variables[naming.ENV_NOTIFICATION_TOPIC_ARN] == {"Ref": logical_id}
    assert variables[naming.ENV_PROJECTION_MODULE] == "notifications.projectors.user_notifications"
    # the API reads the read model and publishes nothing
    api = [r for r in each.resources("AWS::Lambda::Function", "notifications").values()
           if r["Properties"]["FunctionName"].endswith("-notifications-api")]
    assert len(api) == 1 and naming.ENV_NOTIFICATION_TOPIC_ARN not in api[0]["Properties"]["Environment"]["Variables"]
