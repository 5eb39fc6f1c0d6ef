"""The replay-worker Lambda: the Step Functions Distributed Map of `eventstack replay --engine aws`
invokes it once per item of the plan's manifest; the local engine's process pool runs the same core.

Contract (stable; eventstack/replay_aws.py and infra/replay.py build on it):

- **Handler**: `replay_worker.handler.handler` (asset root lambdas/; function logical name
  `escore.naming.replay_worker_function()`, "replay-worker"). No environment variable is needed
  (AWS_REGION as Lambda sets it); IAM: s3:GetObject on the plan's keys, dynamodb:GetItem, PutItem,
  UpdateItem on the target table. Memory held: one stream's events, up to 20,000 owned items and the
  bucket's shared items (not measured on Lambda).
- **Event**: one manifest item, a JSON object (escore.replay_file.PlanItem; unknown keys refused):
  `{"projection": "user_timeline", "folds": "profiles.projectors.user_timeline", "stage": "dev",
  "table": "<target table>", "bucket": "<S3 bucket of the plan>", "keys": ["<plan key>", ...],
  "index": k, "count": N, "cuts": {"<stream>": {"<shard id>": "<sequence number>"}},
  "require_start": true, "origins": null}`.
  `keys`: the plan files of bucket k (gzip JSON Lines, one envelope a line as archived, EACH FILE
  sorted by (stream_id, version); several files of one bucket are merged). `cuts`: the replay's cuts
  (the `$replay#cuts` item), written as the live marks of the shared items. `require_start`: false for
  a `--since` window. `origins`: only with count 1, a key of gzip JSON Lines `[event_id, namespace,
  position]` for the stream records in the plan (the shared items' recent events); else null.
- **Returns** (escore.replay_file.FileResult.as_dict): `{"index", "count", "status": "done" |
  "already-done" | "problems", "lines", "events", "folded", "skipped", "duplicates", "failed",
  "items", "written", "already", "problems": [str], "failures": [str], "seconds"}`. "problems" (a gap, two
  events at one version, a line that is not an envelope, a fold that fails) is an answer, not an
  error: retrying cannot fix the plan; the bucket's owned items are written, its shared items and
  done marker are not, so the replay does not switch. Anything else (S3, DynamoDB after its retries,
  a bad event) raises: the Map's retry runs that item alone again, which writes nothing twice
  (version and watermark conditions) and skips a bucket whose done marker exists.
- **Done marker**: `$replay#file:<k>/<N>` / `$done` in the target table (escore.replay_file.done_key),
  `state` = JSON `{"events", "items"}`. Shared items carry `_w#replay:<k>/<N>`.
- **Plan layout** (eventstack.replay_plan writes it locally; the AWS engine's UNLOAD writes the same):
  under `escore.naming.replay_plan_prefix(projection, run)`, the bucket files
  `bucket=<k>/<name>.gz` (k = `stream_bucket(stream_id, N)`: the top 32 bits of MD5(stream_id)
  times N, shifted right by 32) and `manifest.json`: a JSON array of the N items above, index order.
- **SQL**: eventstack/sql/replay_plan.sql (DuckDB dialect; `eventstack.sql.text("replay_plan",
  "athena")` for Athena). It reads a relation `plan_lines(line, origin, archive_key)` (origin 0 the
  archive, 1 the stream records up to the cuts; archive_key orders the copies: the first is kept) and
  takes `$buckets`; it returns `(bucket, line)` ordered by bucket, stream_id, version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from escore.observability import count
from escore.replay_file import PlanItem, fold_plan_file, s3_opener
from escore.runtime import Handler, aws_client, lazy


def build(env: Mapping[str, str], *, s3: Any = None, dynamodb: Any = None) -> Handler:
    """The handler, with its clients (given, or made from the environment's region and endpoint)."""
    del env  # everything it needs comes in the event
    s3 = aws_client("s3", s3)
    dynamodb = aws_client("dynamodb", dynamodb)

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        item = PlanItem.model_validate(event)
        result = fold_plan_file(item, dynamodb, s3_opener(s3, item.bucket))
        count("ReplayEventsFolded", result.events)
        count("ReplayItemsWritten", result.written)
        count("ReplayFilesWithProblems", int(result.status == "problems"))
        return result.as_dict()

    return handle


handler = lazy(build)
