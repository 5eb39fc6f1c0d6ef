"""An API handler for the tests of the API worker processes (eventstack.local.workers).

Named to the runtime as `tests.support.local_workers_handlers:build`, it is built in each worker
process like any handler (`build(env)`), and does what the request's JSON body says:
- {"do": "barrier", "dir": D, "parties": N, "timeout": T}: leave a file in D, then wait (up to T
  seconds, 60 by default) until N invocations have left theirs: met=true says they were all there;
- {"do": "running", "dir": D, "seconds": S}: leave a file in D for S seconds, counting the files
  there meanwhile: max_running is the most invocations seen running at once;
- {"do": "die"}: the process kills itself with SIGKILL, mid-invocation;
- {"do": "raise"}: the handler raises (a function error);
- {"do": "sleep", "seconds": S};
- {"do": "not json"}: returns what Lambda cannot serialize;
- anything else: 200.
Every 200 says which process answered (`pid`), for which function, with which environment.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BARRIER_TIMEOUT_SECONDS = 60.0


def build(env: Mapping[str, str]) -> Any:
    built_in = os.getpid()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        body = json.loads(event.get("body") or "{}")
        action = body.get("do")
        answer: dict[str, Any] = {"pid": os.getpid(), "built_in": built_in, "function": context.function_name,
                                  "service": env.get("SERVICE_NAME")}
        if action == "barrier":
            here = Path(body["dir"])
            (here / f"{os.getpid()}-{uuid.uuid4().hex}").touch()
            deadline = time.monotonic() + float(body.get("timeout", BARRIER_TIMEOUT_SECONDS))
            while len(list(here.iterdir())) < body["parties"] and time.monotonic() < deadline:
                time.sleep(0.01)
            answer["met"] = len(list(here.iterdir())) >= body["parties"]
        elif action == "running":
            mine = Path(body["dir"]) / f"{os.getpid()}-{uuid.uuid4().hex}"
            mine.touch()
            deadline, most = time.monotonic() + float(body["seconds"]), 1
            while time.monotonic() < deadline:
                most = max(most, len(list(mine.parent.iterdir())))
                time.sleep(0.005)
            mine.unlink()
            answer["max_running"] = most
        elif action == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "raise":
            raise RuntimeError("the handler failed on purpose")
        elif action == "sleep":
            time.sleep(float(body["seconds"]))
        elif action == "not json":
            return {"statusCode": 200, "body": object()}
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(answer)}

    return handler
