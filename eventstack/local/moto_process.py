"""The AWS emulation in a process of its own: `python -m eventstack.local.moto_process --port N`.

moto answers every request in Python; in the runtime's process it competes for the one GIL with
the API handlers, the pollers and Firehose. In its own process it has a core to itself.
It prints `ready <port>` once listening (or exits 3 when the port is taken), stops on SIGTERM,
and also stops when its parent goes away, so a killed runtime leaves no server behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from eventstack.local.emulation import MotoEmulation, PortInUse

EXIT_PORT_IN_USE = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    emulation = MotoEmulation(args.host, args.port)
    try:
        emulation.start()
    except PortInUse as exc:
        print(f"error {exc}", flush=True)
        sys.exit(EXIT_PORT_IN_USE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runtime drains on Ctrl-C, then stops us
    parent = os.getppid()
    print(f"ready {emulation.port}", flush=True)
    while not stop.wait(0.5):
        if os.getppid() != parent:  # the runtime is gone
            break
    emulation.stop()


if __name__ == "__main__":
    main()
