"""The mention rule (notifications.domain.mentions): what `@handle` in a post's text is."""

from __future__ import annotations

import pytest

from notifications.domain import MAX_MENTIONS, mentions

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hi @alice", ["alice"]),
        ("@alice and @bob_2, again @alice", ["alice", "bob_2"]),
        ("(@alice) \"@bob\" @carol, @dave. @erin!", ["alice", "bob", "carol", "dave", "erin"]),
        ("@Alice @ALICE", ["alice"]),  # handles are lower case; a mention matches any case
        ("bob@example.com", []),  # after a letter: an address, no mention
        ("@@alice _@alice 3@alice", []),
        ("@ab", []),  # too short for a handle (3-30)
        ("@" + "a" * 30, ["a" * 30]),
        ("@" + "a" * 31, []),  # a run too long is no mention, never a truncated one
        ("@bobé @bob٣", []),  # goes on with another letter or digit
        ("@bob-smith", ["bob"]),  # '-' ends the run
        ("no mentions #here", []),
        ("", []),
    ],
)
def test_mentions(text: str, expected: list[str]) -> None:
    assert mentions(text) == expected


def test_the_first_distinct_mentions_are_kept_and_sorted() -> None:
    handles = [f"user{n:03d}" for n in range(MAX_MENTIONS + 5, 0, -1)]
    found = mentions(" ".join(f"@{h} @{h}" for h in handles))
    assert found == sorted(handles[:MAX_MENTIONS])
