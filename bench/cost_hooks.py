"""The cost benchmark's botocore hooks: each AWS request the handlers make, turned into billable units.

`Hooks` is installed on the session every handler's `boto3.client(...)` copies: before a DynamoDB
request it keeps the parameters (and asks an UpdateItem or DeleteItem for the item it leaves, which
the caller then does not see); after the answer it computes the units by bench/cost_units.py's
rules and adds them to the ledger, for the function being invoked (bench.cost_ledger). The item
images the rules need are read back by `Images`, a client of the benchmark's own botocore session,
whose requests are never counted.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from bench import cost_units as units
from bench.cost_ledger import Ledger, current_function

log = logging.getLogger("bench.cost")


class Images:
    """Reads items with a client of the benchmark's own (its own botocore session: never counted)."""

    def __init__(self, endpoint_url: str) -> None:
        import boto3

        session = boto3.session.Session()
        kwargs = dict(endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
        from botocore.config import Config

        config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
        self.dynamodb = session.client("dynamodb", config=config, **kwargs)
        self.kinesis = session.client("kinesis", config=config, **kwargs)
        self._schemas: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def key_names(self, table: str) -> list[str]:
        with self._lock:
            if table not in self._schemas:
                described = self.dynamodb.describe_table(TableName=table)["Table"]
                self._schemas[table] = [k["AttributeName"] for k in described["KeySchema"]]
            return self._schemas[table]

    def key_of(self, table: str, item: Mapping[str, Any]) -> dict[str, Any] | None:
        names = self.key_names(table)
        if not all(n in item for n in names):
            return None
        return {n: item[n] for n in names}

    def get_many(self, table: str, keys: list[Mapping[str, Any]]) -> dict[str, dict[str, Any] | None]:
        """key string -> the full item now (None when absent)."""
        out: dict[str, dict[str, Any] | None] = {key_string(k): None for k in keys}
        unique = list({key_string(k): k for k in keys}.values())
        for start in range(0, len(unique), 100):
            request: dict[str, Any] = {table: {"Keys": unique[start:start + 100], "ConsistentRead": True}}
            for _ in range(20):
                answer = self.dynamodb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(table, []):
                    key = self.key_of(table, item)
                    if key is not None:
                        out[key_string(key)] = item
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
        return out

    def get(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.get_many(table, [key])[key_string(key)]

    def pages(self, operation: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The items one Query/Scan page read, in full: the same request without projection or filter."""
        request = {k: v for k, v in params.items()
                   if k in ("TableName", "IndexName", "KeyConditionExpression", "KeyConditions",
                            "ExclusiveStartKey", "Limit", "ScanIndexForward", "ConsistentRead", "Segment",
                            "TotalSegments", "ExpressionAttributeNames", "ExpressionAttributeValues")}
        used = set(re.findall(r"[#:][A-Za-z0-9_]+", str(request.get("KeyConditionExpression", ""))))
        if "ExpressionAttributeNames" in request:
            names = {k: v for k, v in request["ExpressionAttributeNames"].items() if k in used}
            request["ExpressionAttributeNames"] = names
            if not names:
                request.pop("ExpressionAttributeNames")
        if "ExpressionAttributeValues" in request:
            values = {k: v for k, v in request["ExpressionAttributeValues"].items() if k in used}
            request["ExpressionAttributeValues"] = values
            if not values:
                request.pop("ExpressionAttributeValues")
        call = self.dynamodb.query if operation == "Query" else self.dynamodb.scan
        items: list[dict[str, Any]] = call(**request).get("Items", [])
        return items


def key_string(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, default=str)


_STATE = "_bench_cost"


class Hooks:
    """botocore handlers on the handlers' session: parameters in, units out."""

    def __init__(self, ledger: Ledger, images: Images) -> None:
        self.ledger = ledger
        self.images = images
        self.errors: Counter[str] = Counter()

    def install(self, events: Any) -> None:
        events.register("provide-client-params", self.provide_params, unique_id="bench-cost-params")
        events.register("after-call", self.after_call, unique_id="bench-cost-after")

    def uninstall(self, events: Any) -> None:
        events.unregister("provide-client-params", unique_id="bench-cost-params")
        events.unregister("after-call", unique_id="bench-cost-after")

    # -- before the request -------------------------------------------------------------------
    def provide_params(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        if service not in ("dynamodb", "kinesis"):
            return
        state: dict[str, Any] = {"params": dict(params), "injected": False, "before": {}}
        context[_STATE] = state
        if service != "dynamodb":
            return
        try:
            op = model.name
            if op == "UpdateItem" and params.get("ReturnValues", "NONE") == "NONE":
                params["ReturnValues"] = "ALL_NEW"
                state["injected"] = True
            elif op == "DeleteItem" and params.get("ReturnValues", "NONE") == "NONE":
                params["ReturnValues"] = "ALL_OLD"
                state["injected"] = True
            elif op == "TransactWriteItems":
                state["before"] = self._transact_before(params.get("TransactItems") or [])
            elif op == "BatchWriteItem":
                state["before"] = self._batch_write_before(params.get("RequestItems") or {})
        except Exception as exc:  # never break the handler being measured
            self.errors[f"params:{type(exc).__name__}"] += 1
            log.debug("provide-client-params hook failed", exc_info=True)

    def _transact_before(self, items: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
        wanted: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for entry in items:
            ((kind, op),) = entry.items()
            if kind != "Put":
                wanted[op["TableName"]].append(op["Key"])
        found: dict[str, dict[str, Any] | None] = {}
        for table, keys in wanted.items():
            for k, v in self.images.get_many(table, keys).items():
                found[table + "|" + k] = v
        return found

    def _batch_write_before(self, requests: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any] | None]:
        found: dict[str, dict[str, Any] | None] = {}
        for table, writes in requests.items():
            keys = [w["DeleteRequest"]["Key"] for w in writes if "DeleteRequest" in w]
            if keys:
                for k, v in self.images.get_many(table, keys).items():
                    found[table + "|" + k] = v
        return found

    # -- after the answer ---------------------------------------------------------------------
    def after_call(self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any],
                   **_: Any) -> None:
        function = current_function()
        service = model.service_model.service_name
        op = model.name
        self.ledger.request(function, service, op)
        state = context.get(_STATE) or {}
        try:
            status = getattr(http_response, "status_code", 200)
            if service == "dynamodb":
                self._dynamodb(function, op, state, parsed, status)
            elif service == "kinesis" and status < 300 and op in ("PutRecords", "PutRecord"):
                self._kinesis(function, op, state.get("params") or {}, parsed)
        except Exception as exc:
            self.errors[f"{service}:{op}:{type(exc).__name__}"] += 1
            log.debug("after-call hook failed on %s %s", service, op, exc_info=True)
        if state.get("injected"):
            parsed.pop("Attributes", None)  # the caller asked for no return values: it gets none

    def _kinesis(self, function: str | None, op: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> None:
        stream = str(params.get("StreamName") or params.get("StreamARN") or "?").rsplit("/", 1)[-1]
        accepted: list[tuple[int, int]] = []
        if op == "PutRecord":
            accepted.append((_blob_len(params.get("Data")), len(str(params.get("PartitionKey", "")).encode())))
        else:
            for record, outcome in zip(params.get("Records") or [], parsed.get("Records") or [], strict=False):
                if not outcome.get("ErrorCode"):
                    accepted.append((_blob_len(record.get("Data")), len(str(record.get("PartitionKey", "")).encode())))
        self.ledger.kinesis(function, stream, accepted)

    def _dynamodb(self, function: str | None, op: str, state: Mapping[str, Any], parsed: dict[str, Any],
                  status: int) -> None:
        params: Mapping[str, Any] = state.get("params") or {}
        code = (parsed.get("Error") or {}).get("Code", "") if status >= 300 else ""
        condition_failed = code in ("ConditionalCheckFailedException", "TransactionCanceledException")
        if status >= 300 and not condition_failed:
            self.ledger.dynamodb(function, op, 0.0, 0.0)  # refused before any work: not billed
            return
        images = self.images
        wcu = rcu = 0.0
        transact_items = 0
        if op == "PutItem":
            if condition_failed:
                existing = parsed.get("Item") or images.get(params["TableName"], images.key_of(params["TableName"], params["Item"]) or {})
                wcu = units.write_units(units.item_size(existing))
            else:
                wcu = units.write_units(units.item_size(params["Item"]))
        elif op == "UpdateItem":
            if condition_failed:
                wcu = units.write_units(units.item_size(images.get(params["TableName"], params["Key"])))
            else:
                after = parsed.get("Attributes") if state.get("injected") else images.get(params["TableName"], params["Key"])
                wcu = units.write_units(units.item_size(after))
        elif op == "DeleteItem":
            if condition_failed:
                wcu = units.write_units(units.item_size(images.get(params["TableName"], params["Key"])))
            else:
                wcu = units.write_units(units.item_size(parsed.get("Attributes")))
        elif op == "TransactWriteItems":
            items = params.get("TransactItems") or []
            before: Mapping[str, Any] = state.get("before") or {}
            after: dict[str, Any] = {}
            if not condition_failed:
                updates: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
                for entry in items:
                    if "Update" in entry:
                        updates[entry["Update"]["TableName"]].append(entry["Update"]["Key"])
                for table, keys in updates.items():
                    for k, v in images.get_many(table, keys).items():
                        after[table + "|" + k] = v
            sizes = []
            for entry in items:
                ((kind, body),) = entry.items()
                if kind == "Put":
                    sizes.append(units.item_size(body["Item"]))
                    continue
                ref = body["TableName"] + "|" + key_string(body["Key"])
                image = after.get(ref) if kind == "Update" and not condition_failed else before.get(ref)
                sizes.append(units.item_size(image))
            wcu = units.transact_write_units(sizes)
            transact_items = len(items)
        elif op == "BatchWriteItem":
            unprocessed = {table: {json.dumps(w, sort_keys=True, default=str) for w in writes}
                           for table, writes in (parsed.get("UnprocessedItems") or {}).items()}
            before = state.get("before") or {}
            sizes = []
            for table, writes in (params.get("RequestItems") or {}).items():
                for w in writes:
                    if json.dumps(w, sort_keys=True, default=str) in unprocessed.get(table, set()):
                        continue
                    if "PutRequest" in w:
                        sizes.append(units.item_size(w["PutRequest"]["Item"]))
                    else:
                        sizes.append(units.item_size(before.get(table + "|" + key_string(w["DeleteRequest"]["Key"]))))
            wcu = units.batch_write_units(sizes)
        elif op == "GetItem":
            item = parsed.get("Item")
            if item and (params.get("ProjectionExpression") or params.get("AttributesToGet")):
                item = images.get(params["TableName"], params["Key"])
            rcu = units.read_units(units.item_size(item), bool(params.get("ConsistentRead")))
        elif op == "BatchGetItem":
            rcu = self._batch_get(params, parsed)
        elif op in ("Query", "Scan"):
            consistent = bool(params.get("ConsistentRead"))
            if any(params.get(k) for k in ("ProjectionExpression", "FilterExpression", "AttributesToGet",
                                           "QueryFilter", "ScanFilter")) or params.get("Select") == "COUNT":
                items = images.pages(op, params)
            else:
                items = parsed.get("Items") or []
            rcu = units.page_read_units([units.item_size(i) for i in items], consistent)
        elif op == "TransactGetItems":
            sizes = []
            for entry in params.get("TransactItems") or []:
                get = entry["Get"]
                sizes.append(units.item_size(images.get(get["TableName"], get["Key"])))
            rcu = units.transact_read_units(sizes)
            transact_items = len(sizes)
        self.ledger.dynamodb(function, op, float(wcu), float(rcu), transact_items=transact_items,
                             failed_condition=condition_failed)

    def _batch_get(self, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> float:
        images = self.images
        total = 0.0
        unprocessed = parsed.get("UnprocessedKeys") or {}
        for table, request in (params.get("RequestItems") or {}).items():
            consistent = bool(request.get("ConsistentRead"))
            skipped = {key_string(k) for k in (unprocessed.get(table) or {}).get("Keys", [])}
            keys = [k for k in request.get("Keys", []) if key_string(k) not in skipped]
            if request.get("ProjectionExpression") or request.get("AttributesToGet"):
                found = images.get_many(table, keys)
            else:
                found = {key_string(k): None for k in keys}
                for item in (parsed.get("Responses") or {}).get(table, []):
                    key = images.key_of(table, item)
                    if key is not None:
                        found[key_string(key)] = item
            total += sum(units.read_units(units.item_size(found.get(key_string(k))), consistent) for k in keys)
        return total


def _blob_len(data: Any) -> int:
    if data is None:
        return 0
    if isinstance(data, str):
        return len(data.encode())
    return len(data)
