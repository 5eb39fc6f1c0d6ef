"""`eventstack local`: the whole stack on this machine (docs/api.md, "The local runtime's routes")."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer


def local(
    host: Annotated[str, typer.Option(help="Address the HTTP API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of the HTTP API (0: any free one).")] = 8000,
    aws_port: Annotated[int, typer.Option("--aws-port", min=0, max=65535,
                                          help="Port of the AWS emulation (moto), on 127.0.0.1 (0: any free one).")
                        ] = 5000,
    firehose_interval: Annotated[
        float, typer.Option("--firehose-interval", min=0.0, help="Seconds Firehose buffers before writing to S3.")
    ] = 5.0,
    fault_duplicates: Annotated[
        float, typer.Option("--fault-duplicates", min=0.0, max=1.0, help="Probability that a batch is delivered again.")
    ] = 0.0,
    fault_crash: Annotated[
        float,
        typer.Option("--fault-crash", min=0.0, max=0.99,
                     help="Probability that an invocation fails after doing part of its work."),
    ] = 0.0,
    fault_poller_kill: Annotated[
        float, typer.Option("--fault-poller-kill", min=0.0, max=0.99,
                            help="Probability that a mapping's poller dies part-way through a delivery "
                                 "(a new one takes over from the checkpoints).")
    ] = 0.0,
    fault_kinesis_throttle: Annotated[
        float, typer.Option("--fault-kinesis-throttle", min=0.0, max=1.0,
                            help="Probability that each PutRecords record is refused as throttled.")
    ] = 0.0,
    fault_archive_put_failure: Annotated[
        float, typer.Option("--fault-archive-put-failure", min=0.0, max=1.0,
                            help="Probability that an archive PutObject fails (503 SlowDown).")
    ] = 0.0,
    fault_archive_retry_seconds: Annotated[
        float, typer.Option("--fault-archive-retry-seconds", min=0.0, max=7200.0,
                            help="How long Firehose retries a failing archive write before it writes the "
                                 "records under errors/.")
    ] = 300.0,
    fault_seed: Annotated[
        int | None, typer.Option("--fault-seed", help="Seed of the fault injection's random numbers.")
    ] = None,
    shards: Annotated[int, typer.Option(min=1, max=16, help="Shards per Kinesis stream.")] = 1,
    log_level: Annotated[
        str, typer.Option("--log-level", help="warning (quiet), info, or debug (one line per batch).")
    ] = "warning",
    api_workers: Annotated[
        int | None,
        typer.Option("--api-workers", show_default=False,
                     help="Worker processes running the API functions, each one invocation at a time like a "
                          "Lambda execution environment (1 to 64; default: two per CPU, 2 to 8)."),
    ] = None,
) -> None:
    """Run the whole stack locally: AWS emulation, API, stream processing, archive. No Docker, no AWS account."""
    from eventstack.local.faults import FaultSettings
    from eventstack.local.runtime import LocalConfig, LocalRuntime, PortInUse
    from eventstack.local.workers import MAX_API_WORKERS, default_api_workers

    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("one of: debug, info, warning, error", param_hint="--log-level")
    if port == aws_port != 0:
        raise typer.BadParameter(f"the API and the AWS emulation cannot share port {port}", param_hint="--port")
    _check_host(host)
    if api_workers is None:
        api_workers = default_api_workers()
    elif not 1 <= api_workers <= MAX_API_WORKERS:
        raise typer.BadParameter(f"{api_workers} is not between 1 and {MAX_API_WORKERS}", param_hint="--api-workers")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("eventstack").setLevel(level)
    logging.getLogger("werkzeug").setLevel(logging.INFO if level == "DEBUG" else logging.ERROR)
    config = LocalConfig(
        host=host,
        port=port,
        aws_port=aws_port,
        firehose_interval=firehose_interval,
        faults=FaultSettings(fault_duplicates, fault_crash, fault_seed, poller_kill=fault_poller_kill,
                             kinesis_throttle=fault_kinesis_throttle, archive_put_failure=fault_archive_put_failure,
                             archive_retry_seconds=fault_archive_retry_seconds),
        shard_count=shards,
        log_level=level,
        api_workers=api_workers,
    )
    runtime = LocalRuntime(config)
    try:
        runtime.start()
    except PortInUse as exc:
        typer.echo(f"eventstack local: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(runtime.banner())
    sys.stdout.flush()
    code = runtime.serve_until_interrupted()  # non-zero when the AWS emulation died under it
    # Everything is stopped and flushed; skip the interpreter's teardown of moto's and botocore's
    # object graphs, which takes seconds and does nothing useful here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_host(host: str) -> None:
    """An address of this machine to listen on (an IP literal or a name that resolves to one), checked
    before anything starts: a bad --host is one clear line and exit 2, never a traceback."""
    import ipaddress
    import socket

    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host or host.replace(".", "").isdigit():  # digits and dots, yet no IP (256.1.1.1)
            raise typer.BadParameter(f"{host!r} is not an IP address", param_hint="--host") from None
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError) as exc:
            raise typer.BadParameter(f"{host!r} does not resolve ({exc})", param_hint="--host") from None
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host!r}: {exc.strerror or exc}", param_hint="--host") from None
