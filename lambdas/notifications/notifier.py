"""The notifier port and its two adapters: SNS (AWS) and the log (the local runtime).

`notifier_from_env` picks one from escore.settings.NotifierSettings (`NOTIFIER`, and
`NOTIFICATION_TOPIC_ARN` for SNS). An SNS message is the notification as JSON, with the user's id
as a message attribute (`user_id`), so a subscription can filter on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from escore.runtime import aws_client
from escore.settings import NotifierSettings
from notifications.domain import Notification

# The local runtime shows this logger's lines at INFO even when it is otherwise quiet.
LOG_NOTIFIER = "eventstack.notifications"


class Notifier(Protocol):
    def send(self, notification: Notification) -> None: ...


class SnsNotifier:
    def __init__(self, topic_arn: str, client: Any = None) -> None:
        self.topic_arn = topic_arn
        self._client = aws_client("sns", client)

    def send(self, notification: Notification) -> None:
        self._client.publish(
            TopicArn=self.topic_arn,
            Message=orjson.dumps(notification.to_dict()).decode(),
            MessageAttributes={"user_id": {"DataType": "String", "StringValue": notification.user_id}},
        )


class LogNotifier:
    """One line per notification in the log (the local runtime's): what SNS would have been sent."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(LOG_NOTIFIER)

    def send(self, notification: Notification) -> None:
        n = notification
        self._log.info("notify user %s (@%s): mentioned by %s in post %s (event %s)",
                       n.user_id, n.handle, n.author_id, n.post_id, n.event_id)


def notifier_from_env(env: Mapping[str, str], sns_client: Any = None) -> Notifier:
    settings = NotifierSettings.from_env(env)
    if settings.notifier == "log":
        return LogNotifier()
    assert settings.topic_arn is not None  # the settings require it for sns
    return SnsNotifier(settings.topic_arn, sns_client)
