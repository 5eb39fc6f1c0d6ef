"""The cost benchmark's reference workload: a seeded plan of commands, sent through the HTTP API.

`make_plan`: USERS users, POSTS posts with Zipf(1.1) authors, 60% of them with 1-3 hashtags; a
fifth of the posts edited once, a tenth deleted, a quarter of the users renamed, in a seeded order.
`Clients`: CLIENTS threads sending the plan's commands in order, each waiting for what its command
needs (an edit for its post's creation, a deletion for the edit before it).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.cost_ledger import Ledger
from bench.local_pipeline import call as local_pipeline_call

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "river", "stones",
         "hum", "under", "bright", "morning", "light", "and", "every", "small", "harbor", "keeps", "its",
         "boats", "close", "to", "shore", "before", "winter", "storms", "arrive", "bringing", "news", "of",
         "distant", "cities", "markets", "songs", "old", "friends"]
TAGS = ["python", "aws", "serverless", "music", "food", "travel", "news", "sports", "art", "books",
        "coffee", "photography", "science", "climate", "cats", "dogs", "running", "cycling", "movies",
        "design", "startup", "data", "cloud", "events", "weekend", "family", "garden", "history",
        "space", "gaming", "jazz", "health", "tech", "writing", "cooking", "hiking", "ocean", "city",
        "friends", "learning"]


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def post_text(rng: random.Random, tag_weights: list[float], tag_fraction: float) -> str:
    words = rng.choices(WORDS, k=rng.randint(6, 30))
    if rng.random() < tag_fraction:
        tags = set()
        for _ in range(rng.randint(1, 3)):
            tags.add(rng.choices(TAGS, weights=tag_weights)[0])
        for tag in sorted(tags):
            words.insert(rng.randint(0, len(words)), f"#{tag}")
    return " ".join(words).capitalize()[:2000]


@dataclass
class Plan:
    users: int
    posts: int
    authors: list[int]
    texts: list[str]
    edits: dict[int, str]  # post index -> new text
    deletes: set[int]
    renames: dict[int, str]  # user index -> new display name
    ops: list[tuple[str, int]]  # ("create" | "edit" | "delete" | "rename", index), in the order sent


def make_plan(users: int, posts: int, seed: int, tag_fraction: float = 0.6) -> Plan:
    rng = random.Random(seed)
    ranks = list(range(users))
    rng.shuffle(ranks)  # who is popular is random; how popular follows Zipf(1.1)
    weights = [0.0] * users
    for rank, w in zip(ranks, zipf_weights(users, 1.1), strict=True):
        weights[rank] = w
    authors = rng.choices(range(users), weights=weights, k=posts)
    tag_weights = zipf_weights(len(TAGS), 1.0)
    texts = [post_text(rng, tag_weights, tag_fraction) for _ in range(posts)]
    edited = sorted(rng.sample(range(posts), posts // 5))
    edits = {i: post_text(rng, tag_weights, tag_fraction) for i in edited}
    deletes = set(rng.sample(range(posts), posts // 10))
    renames = {u: f"{rng.choice(WORDS).capitalize()} {rng.choice(WORDS).capitalize()}"
               for u in sorted(rng.sample(range(users), users // 4))}
    timeline: list[tuple[float, int, str, int]] = []
    order = 0
    for i in range(posts):
        timeline.append((float(i), order, "create", i))
        order += 1
        last = float(i)
        if i in edits:
            last = rng.uniform(last, posts)
            timeline.append((last, order, "edit", i))
            order += 1
        if i in deletes:
            timeline.append((rng.uniform(last, posts + 1), order, "delete", i))
            order += 1
    for u in renames:
        timeline.append((rng.uniform(0, posts), order, "rename", u))
        order += 1
    timeline.sort()
    return Plan(users, posts, authors, texts, edits, deletes, renames, [(kind, i) for _, _, kind, i in timeline])


http = local_pipeline_call  # one HTTP helper for the benchmarks (bench.local_pipeline.call)


class Clients:
    """CLIENTS threads sending the plan's commands in order, each waiting for what its command needs."""

    def __init__(self, api: str, plan: Plan, ledger: Ledger, clients: int) -> None:
        self.api, self.plan, self.ledger, self.clients = api, plan, ledger, clients
        self.user_ids: list[str | None] = [None] * plan.users
        self.post_ids: list[str | None] = [None] * plan.posts
        self.created = [threading.Event() for _ in range(plan.posts)]
        self.edited = [threading.Event() for _ in range(plan.posts)]
        self.answers: Counter[str] = Counter()
        self._lock = threading.Lock()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        self.ledger.api_request()
        status, answer = http(self.api, method, path, body)
        with self._lock:
            self.answers["2xx" if 200 <= status < 300 else str(status)] += 1
        return status, answer

    def run(self, ops: list[tuple[str, int]]) -> None:
        position = [0]
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if position[0] >= len(ops):
                        return
                    op = ops[position[0]]
                    position[0] += 1
                self.do(*op)

        threads = [threading.Thread(target=worker, name=f"bench-client-{i}") for i in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def register_all(self) -> None:
        self.run([("register", u) for u in range(self.plan.users)])

    def do(self, kind: str, i: int) -> None:
        plan = self.plan
        if kind == "register":
            status, body = self.call("POST", "/users", {"handle": f"u{i:04d}_{uuid.uuid4().hex[:8]}",
                                                        "display_name": f"User {i}"})
            if status == 201:
                self.user_ids[i] = body["user_id"]
        elif kind == "rename":
            if self.user_ids[i] is not None:
                self.call("PATCH", f"/users/{self.user_ids[i]}", {"display_name": plan.renames[i], "expected_version": 1})
        elif kind == "create":
            try:
                author = self.user_ids[plan.authors[i]]
                if author is not None:
                    status, body = self.call("POST", "/posts", {"author_id": author, "text": plan.texts[i]})
                    if status == 201:
                        self.post_ids[i] = body["post_id"]
            finally:
                self.created[i].set()
        elif kind == "edit":
            try:
                self.created[i].wait(300)
                if self.post_ids[i] is not None:
                    self.call("PATCH", f"/posts/{self.post_ids[i]}", {"text": plan.edits[i], "expected_version": 1})
            finally:
                self.edited[i].set()
        elif kind == "delete":
            self.created[i].wait(300)
            version = 1
            if i in plan.edits:
                self.edited[i].wait(300)
                version = 2
            if self.post_ids[i] is not None:
                self.call("DELETE", f"/posts/{self.post_ids[i]}?expected_version={version}")
