"""The AWS emulation: moto's server on loopback, and every resource of the plan created in it.

moto's backends are not safe for concurrent writes (a conditional put can race another, two
Kinesis puts can take one sequence number), and AWS guarantees both. So DynamoDB and Kinesis
requests pass one lock: the emulation serializes them the way the real services make them atomic.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from werkzeug.serving import BaseWSGIServer, make_server

from eventstack.local.plan import LOCAL_ROLE_ARN, REGION, LocalPlan

FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_SERIALIZED_TARGETS = ("DynamoDB_", "Kinesis_")


class PortInUse(RuntimeError):
    def __init__(self, host: str, port: int, what: str, option: str):
        super().__init__(f"{what} cannot listen on {host}:{port}: the port is in use (choose another with {option})")
        self.port = port


def bind(host: str, port: int, app: Any, what: str, option: str, **kwargs: Any) -> BaseWSGIServer:
    """make_server, turning 'address in use' into one clear error (werkzeug would print its own and exit)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUse(host, port, what, option) from exc
        raise
    try:
        return make_server(host, port, app, threaded=True, **kwargs)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUse(host, port, what, option) from exc
        raise
    except SystemExit as exc:  # werkzeug exits when the port is in use on some platforms
        raise PortInUse(host, port, what, option) from exc


def _serialize(app: Callable[..., Any]) -> Callable[..., Any]:
    lock = threading.Lock()

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(_SERIALIZED_TARGETS):
            with lock:
                # Consume the whole response inside the lock: moto builds it lazily at times.
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wsgi


class MotoEmulation:
    """moto's server (ThreadedMotoServer's pieces), bound in the caller's thread so a taken port fails fast."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5000):
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        class QuietHandler(MotoRequestHandler):  # type: ignore[misc]
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        app = _serialize(DomainDispatcherApplication(create_backend_app))
        self._server = bind(self.host, self.port, app, "the AWS emulation", "--aws-port",
                            request_handler=QuietHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="moto-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def client(self, service: str) -> Any:
        """One client per service, shared by the threads (boto3 clients are thread-safe)."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = make_client(service, self.endpoint_url)
            return self._clients[service]


_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32,
                 account_id_endpoint_mode="disabled")


_SESSION: list[Any] = []
_SESSION_LOCK = threading.Lock()


def make_client(service: str, endpoint_url: str) -> Any:
    # One session: it loads each service model once (a new session per client costs ~0.3 s each).
    with _SESSION_LOCK:
        if not _SESSION:
            _SESSION.append(boto3.session.Session())
        return _SESSION[0].client(service, endpoint_url=endpoint_url, region_name=REGION,
                                  config=_CONFIG, **FAKE_CREDENTIALS)


@dataclass
class Resources:
    """ARNs and URLs of what was created, for the pollers and the status."""

    table_stream_arns: dict[str, str] = field(default_factory=dict)  # table -> DynamoDB stream ARN
    stream_arns: dict[str, str] = field(default_factory=dict)  # Kinesis stream -> ARN
    queue_urls: dict[str, str] = field(default_factory=dict)  # queue name -> URL
    queue_arns: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # one line per resource, for the banner


def create_resources(plan: LocalPlan, client: Callable[[str], Any], shard_count: int = 1) -> Resources:
    """Create every table, stream, queue, delivery stream and the bucket of the plan."""
    res = Resources()
    dynamodb, kinesis, sqs, s3 = (client(s) for s in ("dynamodb", "kinesis", "sqs", "s3"))

    for table in plan.tables:
        name = plan.table_names[table.logical_name]
        keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
        spec: dict[str, Any] = {
            "TableName": name,
            "KeySchema": [{"AttributeName": k[0], "KeyType": kind} for k, kind in keys],
            "AttributeDefinitions": [{"AttributeName": k[0], "AttributeType": k[1]} for k, _ in keys],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if table.stream:
            spec["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
        description = dynamodb.create_table(**spec)["TableDescription"]
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
        if table.stream:
            res.table_stream_arns[name] = description["LatestStreamArn"]
        res.created.append(f"DynamoDB table {name}" + (" (stream NEW_IMAGE)" if table.stream else ""))

    for stream in plan.streams.values():
        kinesis.create_stream(StreamName=stream, ShardCount=shard_count)
        summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        res.stream_arns[stream] = summary["StreamARN"]
        res.created.append(f"Kinesis stream {stream} ({shard_count} shard{'s' if shard_count > 1 else ''})")

    for queue in _unique(m.dlq for m in plan.mappings):
        url = sqs.create_queue(QueueName=queue, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
        res.queue_urls[queue] = url
        res.queue_arns[queue] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        res.created.append(f"SQS queue {queue}")

    s3.create_bucket(Bucket=plan.archive_bucket)
    res.created.append(f"S3 bucket {plan.archive_bucket}")

    # The delivery streams exist in moto so the AWS CLI can describe them; moto delivers nothing
    # from a Kinesis source, eventstack.local.firehose does.
    firehose = client("firehose")
    for delivery in plan.deliveries:
        firehose.create_delivery_stream(
            DeliveryStreamName=delivery.name,
            DeliveryStreamType="KinesisStreamAsSource",
            KinesisStreamSourceConfiguration={
                "KinesisStreamARN": res.stream_arns[delivery.stream],
                "RoleARN": LOCAL_ROLE_ARN,
            },
            ExtendedS3DestinationConfiguration={
                "RoleARN": LOCAL_ROLE_ARN,
                "BucketARN": f"arn:aws:s3:::{plan.archive_bucket}",
                "Prefix": f"{plan.archive_prefix}service={delivery.service}/",
                "ErrorOutputPrefix": plan.archive_error_prefix,
                "CompressionFormat": "GZIP",
            },
        )
        res.created.append(f"Firehose {delivery.name}: {delivery.stream} -> s3://{plan.archive_bucket}")
    for mapping in plan.mappings:
        res.created.append(f"event source mapping {mapping.source_label} -> {mapping.function} (DLQ {mapping.dlq})")
    return res


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
