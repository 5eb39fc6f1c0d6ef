"""The AWS emulation: moto's server on loopback, and every resource of the plan created in it.

moto's backends are not safe for concurrent writes (a conditional put can race another, two
Kinesis puts can take one sequence number), and AWS guarantees both. So DynamoDB and Kinesis
requests pass one lock: the emulation serializes them the way the real services make them atomic.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from eventstack.local.plan import LOCAL_ROLE_ARN, REGION, LocalPlan

log = logging.getLogger("eventstack.local")
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# DynamoDB Streams with DynamoDB: a change-stream read must not run while a transaction is half
# written (its records would be read, then rolled back: a phantom event relayed). "DynamoDBStreams_"
# is not a "DynamoDB_" prefix, hence both.
_SERIALIZED_TARGETS = ("DynamoDB_", "DynamoDBStreams_", "Kinesis_")


class PortInUse(RuntimeError):
    def __init__(self, host: str, port: int, what: str, option: str):
        super().__init__(f"{what} cannot listen on {host}:{port}: the port is in use (choose another with {option})")
        self.port = port


class QuietRequestHandler(WSGIRequestHandler):
    """No access log on stderr: the runtime is quiet unless asked (--log-level debug)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s", self.command, self.path, code)


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
        kwargs.setdefault("request_handler", QuietRequestHandler)
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


class _CopyWithoutTables:
    """`copy` as moto's DynamoDB backend sees it while the patch below is on: tables are not copied."""

    def __init__(self, table_type: type):
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


class TransactionRollback:
    """Make moto's TransactWriteItems cheap and its rollback exact.

    moto backs up every table a transaction touches with a deep copy of the whole table, before
    every transaction: each append to an event store then costs time in proportion to the store's
    size (0.2 s at a few hundred events). And when a transaction fails, the copy is put back, but the
    change-stream records of the writes it had already made stay in the old shard that open
    iterators read: phantom events of a transaction that never happened.
    While installed, the tables are not copied; instead the items the transaction names are saved
    (a few deep copies) with the length of each stream, and on failure put back exactly, the stream
    records of the failed transaction dropped. DynamoDB requests are serialized (see `_serialize`),
    so nothing else runs meanwhile.
    """

    def __init__(self) -> None:
        self._installed: tuple[Any, Any, Any] | None = None

    def install(self) -> None:
        if self._installed is not None:
            return
        from moto.dynamodb import models
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.table import Table

        original = DynamoDBBackend.transact_write_items
        saved_copy = models.copy
        rollback = self

        def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
            saved = rollback.save(backend, transact_items)
            try:
                original(backend, transact_items)
            except BaseException:
                rollback.restore(saved)
                raise

        models.copy = _CopyWithoutTables(Table)  # type: ignore[assignment]
        DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
        self._installed = (DynamoDBBackend, original, saved_copy)

    def uninstall(self) -> None:
        if self._installed is None:
            return
        from moto.dynamodb import models

        backend_type, original, saved_copy = self._installed
        backend_type.transact_write_items = original
        models.copy = saved_copy
        self._installed = None

    @staticmethod
    def save(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
        from moto.dynamodb.models.dynamo_type import DynamoType

        saved: list[tuple[Any, Any, Any, Any]] = []
        streams: dict[str, tuple[Any, int]] = {}
        for entry in transact_items:
            try:
                op = next(iter(entry.values()))
                table = backend.tables[op["TableName"]]
                key = op["Item"] if "Item" in op else op["Key"]
                hash_key = DynamoType(key[table.hash_key_attr])
                range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            except (KeyError, TypeError, StopIteration, AttributeError):
                continue  # moto will refuse it before writing anything
            bucket = table.items.get(hash_key)
            if range_key is not None:
                current = bucket.get(range_key) if isinstance(bucket, dict) else None
            else:
                current = bucket
            saved.append((table, hash_key, range_key, copy.deepcopy(current)))
            if table.stream_shard is not None and table.name not in streams:
                streams[table.name] = (table.stream_shard, len(table.stream_shard.items))
        saved.extend((None, shard, length, None) for shard, length in streams.values())
        return saved

    @staticmethod
    def restore(saved: list[tuple[Any, Any, Any, Any]]) -> None:
        for table, hash_key, range_key, item in reversed(saved):
            if table is None:  # a stream: drop the records the failed transaction added
                shard, length = hash_key, range_key
                del shard.items[length:]
                continue
            if range_key is None:
                if item is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = item
            elif item is None:
                bucket = table.items.get(hash_key)
                if bucket is not None:
                    bucket.pop(range_key, None)
            else:
                table.items[hash_key][range_key] = item


@contextlib.contextmanager
def tuned_moto_dynamodb() -> Iterator[None]:
    """moto's DynamoDB as the emulation runs it, for in-process use (`mock_aws` in tests):
    `TransactionRollback` installed, and every DynamoDB request under one lock (moto's backend has
    none: a transaction fails or races when another thread writes the table meanwhile)."""
    from moto.dynamodb import responses

    lock = threading.RLock()
    original_call = responses.DynamoHandler.call_action

    def call_action(handler: Any) -> Any:
        with lock:
            return original_call(handler)

    rollback = TransactionRollback()
    rollback.install()
    responses.DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    try:
        yield
    finally:
        responses.DynamoHandler.call_action = original_call  # type: ignore[method-assign]
        rollback.uninstall()


class MotoEmulation:
    """moto's server, bound in the caller's thread so a taken port fails fast.

    With `own_process`, the server runs in a child process (eventstack/local/moto_process.py) so it
    does not share the GIL with the runtime's handlers and pollers.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5000, *, own_process: bool = False):
        self.host = host
        self.port = port
        self.own_process = own_process
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._rollback = TransactionRollback()

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def process(self) -> subprocess.Popen[str] | None:
        """The child process (with `own_process`, once started), for the runtime to watch."""
        return self._process

    def start(self) -> None:
        if self.own_process:
            self._start_process()
            return
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
        self._rollback.install()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="moto-server", daemon=True)
        self._thread.start()

    def _start_process(self) -> None:
        # Its own session: Ctrl-C in the terminal reaches the runtime, which drains, then stops it.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "eventstack.local.moto_process", "--host", self.host, "--port", str(self.port)],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()  # "ready <port>", or "error <why>" and exit 3
        if not line.startswith("ready "):
            self._process.wait(timeout=10)
            if line.startswith("error ") and "in use" in line:
                raise PortInUse(self.host, self.port, "the AWS emulation", "--aws-port")
            raise RuntimeError(f"the AWS emulation did not start: {line or 'no answer'}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._rollback.uninstall()

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


# The status's client: one quick attempt, so GET /_local/status and drain answer on time while the
# emulation stalls (their DLQ counts are then unknown, null) instead of waiting out 3 x 60 s.
STATUS_CONFIG = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=1, read_timeout=1,
                       max_pool_connections=8, account_id_endpoint_mode="disabled")


def make_client(service: str, endpoint_url: str, config: Config = _CONFIG) -> Any:
    # One session: it loads each service model once (a new session per client costs ~0.3 s each).
    with _SESSION_LOCK:
        if not _SESSION:
            _SESSION.append(boto3.session.Session())
        return _SESSION[0].client(service, endpoint_url=endpoint_url, region_name=REGION,
                                  config=config, **FAKE_CREDENTIALS)


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
