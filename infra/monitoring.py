"""Alarms and one dashboard per service; alarms notify the stage's shared SNS topic.

Alarmed: iterator age of every stream mapping (Lambda's IteratorAge is per function; a projector
with two sources has one alarm covering both mappings), every on-failure queue holding a message,
errors and throttles of every function, Firehose delivery failures and data freshness, API 5xx.
Missing data is "not breaching": an idle stage is a healthy stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra import naming
from infra.archive import ArchiveDelivery
from infra.functions import POWERTOOLS_METRICS_NAMESPACE, ServiceFunction
from infra.mappings import Mapping
from infra.stages import StageSettings

FIVE_MINUTES = Duration.minutes(5)


class AlarmTopic(Construct):
    """The stage's alarm topic (shared stack); service stacks reach it by its deterministic ARN."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageSettings) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", topic_name=naming.alarm_topic(stage.name), enforce_ssl=True)
        if stage.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(stage.alarm_email))


@dataclass(frozen=True)
class MonitoredService:
    functions: Sequence[ServiceFunction]
    mappings: Sequence[Mapping]
    archive: ArchiveDelivery
    api: apigw.RestApi


class ServiceMonitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageSettings,
        service: str,
        monitored: MonitoredService,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        topic = sns.Topic.from_topic_arn(self, "AlarmTopic", naming.alarm_topic_arn(stack, stage.name))
        self._action = cw_actions.SnsAction(topic)
        self._prefix = f"{naming.prefix(stage.name)}-{service}"
        self.alarms: list[cw.Alarm] = []
        graphs: list[cw.IWidget] = []

        mapped = {m.function.spec.name: m.function for m in monitored.mappings}
        for name, fn in mapped.items():
            metric = fn.function.metric("IteratorAge", statistic="Maximum", period=Duration.minutes(1))
            self._alarm(
                f"{name}-iterator-age",
                metric,
                stage.iterator_age_alarm_seconds * 1000,
                f"{name} is more than {stage.iterator_age_alarm_seconds}s behind its stream(s)",
            )
            graphs.append(cw.GraphWidget(title=f"{name} iterator age (ms)", left=[metric], width=8))
        for mapping in monitored.mappings:
            depth = mapping.failure_queue.queue.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=FIVE_MINUTES
            )
            self._alarm(f"{mapping.name}-dlq", depth, 1, f"{mapping.name} gave up on a batch (see its DLQ)")
        for fn in monitored.functions:
            errors = fn.function.metric_errors(statistic="Sum", period=FIVE_MINUTES)
            throttles = fn.function.metric_throttles(statistic="Sum", period=FIVE_MINUTES)
            self._alarm(f"{fn.spec.name}-errors", errors, 1, f"{fn.spec.name} invocations failed")
            self._alarm(f"{fn.spec.name}-throttles", throttles, 1, f"{fn.spec.name} was throttled")
            graphs.append(
                cw.GraphWidget(title=f"{fn.spec.name} errors / throttles", left=[errors, throttles], width=8)
            )

        delivery = monitored.archive.delivery_stream_name
        success = _firehose(delivery, "DeliveryToS3.Success", "Minimum")
        freshness = _firehose(delivery, "DeliveryToS3.DataFreshness", "Maximum")
        self._alarm(
            f"{service}-archive-delivery",
            success,
            1,
            f"{delivery} failed to deliver to S3",
            comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
        )
        freshness_limit = max(900, 3 * stage.firehose_buffer_seconds)
        self._alarm(
            f"{service}-archive-freshness",
            freshness,
            freshness_limit,
            f"{delivery}: oldest undelivered record older than {freshness_limit}s",
        )
        graphs.append(cw.GraphWidget(title="archive delivery", left=[success], right=[freshness], width=8))

        server_errors = monitored.api.metric_server_error(statistic="Sum", period=FIVE_MINUTES)
        self._alarm(f"{service}-api-5xx", server_errors, 1, f"{service} API answered 5xx")
        graphs.append(
            cw.GraphWidget(
                title="API",
                left=[
                    monitored.api.metric_count(statistic="Sum", period=FIVE_MINUTES),
                    server_errors,
                    monitored.api.metric_client_error(statistic="Sum", period=FIVE_MINUTES),
                ],
                right=[monitored.api.metric_latency(statistic="p99", period=FIVE_MINUTES)],
                width=8,
            )
        )

        # What the handlers count (escore.observability, CloudWatch EMF under the Powertools `service`).
        def counted(name: str) -> cw.Metric:
            return cw.Metric(namespace=POWERTOOLS_METRICS_NAMESPACE, metric_name=name,
                             dimensions_map={"service": service}, statistic="Sum", period=FIVE_MINUTES)

        graphs.append(
            cw.GraphWidget(
                title="events published and projected",
                left=[counted("EventsPublished"), counted("EventsApplied")],
                right=[counted("DuplicatesSkipped"), counted("RecordsFailed"), counted("RecordsUnpublished"),
                       counted("Conflicts")],
                width=8,
            )
        )
        # The relay's exactly-once work (publisher.handler) and replay's hold on the projectors (escore.control).
        graphs.append(
            cw.GraphWidget(
                title="re-attempts: found already published, unknown outcomes, batches held back",
                left=[counted("EventsAlreadyPublished"), counted("PublishUnknownOutcomes")],
                right=[counted("BatchesRefused")],
                width=8,
            )
        )

        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=self._prefix)
        self.dashboard.add_widgets(cw.AlarmStatusWidget(title="alarms", alarms=self.alarms, width=24))
        self.dashboard.add_widgets(*graphs)

    def _alarm(
        self,
        name: str,
        metric: cw.IMetric,
        threshold: float,
        description: str,
        comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    ) -> None:
        alarm = cw.Alarm(
            self,
            f"Alarm-{name}",
            alarm_name=f"{self._prefix}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=comparison,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        self.alarms.append(alarm)


def _firehose(delivery_stream: str, metric_name: str, statistic: str) -> cw.Metric:
    return cw.Metric(
        namespace="AWS/Firehose",
        metric_name=metric_name,
        dimensions_map={"DeliveryStreamName": delivery_stream},
        statistic=statistic,
        period=FIVE_MINUTES,
    )
