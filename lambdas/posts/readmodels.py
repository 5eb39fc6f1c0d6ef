"""Queries on the posts service's read models (the tables its projectors write).

`hashtag_counts` is an eventually consistent projection of the posts stream (docs/api.md
"consistency"). Item layout: `posts.projectors.hashtag_counts`.

No "top tags" query: the counts are one item per tag, so ranking them would need a scan (or a
sharded leaderboard index), which a request path should not pay for.
"""

from __future__ import annotations

from typing import Any

from escore.projection import read_count
from escore.runtime import aws_client
from posts.projectors.hashtag_counts import tag_key


class HashtagReadModel:
    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self._client = aws_client("dynamodb", client)

    def count(self, tag: str) -> int:
        """How many live posts carry `tag` (a normalised, lower-case tag); 0 when none or unknown."""
        return read_count(self._client, self.table_name, tag_key(tag), "post_count")
