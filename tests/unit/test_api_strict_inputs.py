"""Strict parsing of what a client sends, on both real APIs over the in-memory store (issue 9):
bodies (a BOM, numbers out of range), integers (body and query), path ids, and the order of checks
(route 404/405, then the request 413/400/422, then the resource's state 404/409; docs/api.md)."""

from __future__ import annotations

import json
import uuid

import pytest

from escore.memory_store import InMemoryEventStore
from posts import api as posts_api
from profiles import api as profiles_api
from tests.support.api import ApiClient, expect_error, routes_of
from tests.support.fakes import FakeProfiles, FakeTimeline

pytestmark = pytest.mark.unit

ENV = {"EVENT_STORE_TABLE": "unused"}


class NoCounts:
    def count(self, tag: str) -> int:
        return 0


@pytest.fixture
def posts() -> ApiClient:
    handler = posts_api.build({**ENV, "SERVICE_NAME": "posts"}, InMemoryEventStore(), hashtags=NoCounts())
    return ApiClient(handler, routes_of("posts"))


@pytest.fixture
def profiles() -> ApiClient:
    handler = profiles_api.build({**ENV, "SERVICE_NAME": "profiles"}, InMemoryEventStore(),
                                 profiles=FakeProfiles(), timeline=FakeTimeline())
    return ApiClient(handler, routes_of("profiles"))


def new_post(posts: ApiClient) -> str:
    answer = posts.post("/posts", {"author_id": str(uuid.uuid4()), "text": "hello"})
    assert answer.status == 201, answer
    return str(answer.json["post_id"])


def new_user(profiles: ApiClient) -> str:
    answer = profiles.post("/users", {"handle": "u_" + uuid.uuid4().hex[:10], "display_name": "U"})
    assert answer.status == 201, answer
    return str(answer.json["user_id"])


# -- defect 11: bodies that gave a puzzling 422 "unpaired surrogate" -----------------------------------
class TestBodies:
    def test_a_body_starting_with_a_bom_is_a_clear_400(self, profiles: ApiClient) -> None:
        """Decided: a BOM is refused (RFC 8259 §8.1: JSON over a network has none), not skipped."""
        body = b"\xef\xbb\xbf" + json.dumps({"handle": "bom_user", "display_name": "B"}).encode()
        error = expect_error(profiles.post("/users", body), 400, "bad_request")
        assert "byte order mark" in error["message"]

    def test_a_number_out_of_range_is_a_clear_400(self, posts: ApiClient) -> None:
        for number in (b"1e400", b"-1e400", b"1" + b"0" * 5000):
            body = b'{"author_id": "' + str(uuid.uuid4()).encode() + b'", "text": "x", "n": ' + number + b"}"
            error = expect_error(posts.post("/posts", body), 400, "bad_request")
            assert "out of range" in error["message"], error

    def test_an_unpaired_surrogate_is_still_a_422_naming_the_field(self, posts: ApiClient) -> None:
        body = b'{"author_id": "' + str(uuid.uuid4()).encode() + b'", "text": "\\ud800"}'
        error = expect_error(posts.post("/posts", body), 422, "validation_error")
        assert error["detail"][0]["loc"] == ["body", "text"]

    def test_the_body_checks_come_before_the_resource_s_state(self, posts: ApiClient) -> None:
        body = b"\xef\xbb\xbf" + json.dumps({"text": "x", "expected_version": 1}).encode()
        expect_error(posts.patch(f"/posts/{uuid.uuid4()}", body), 400, "bad_request")  # not the 404


# -- defect 10: integers ---------------------------------------------------------------------------
class TestIntegers:
    @pytest.mark.parametrize("version", [2**63, 2**64, 10**40, 10**400])
    def test_a_too_large_expected_version_in_a_body_is_a_plain_conflict(
        self, posts: ApiClient, profiles: ApiClient, version: int
    ) -> None:
        post_id = new_post(posts)
        error = expect_error(posts.patch(f"/posts/{post_id}", {"text": "x", "expected_version": version}),
                             409, "conflict")
        assert error["current_version"] == 1
        user_id = new_user(profiles)
        error = expect_error(profiles.patch(f"/users/{user_id}", {"display_name": "x", "expected_version": version}),
                             409, "conflict")
        assert error["current_version"] == 1

    def test_a_too_large_expected_version_in_the_query_is_a_plain_conflict(self, posts: ApiClient) -> None:
        post_id = new_post(posts)
        for version in (2**63, 10**40):
            error = expect_error(posts.delete(f"/posts/{post_id}", query={"expected_version": str(version)}),
                                 409, "conflict")
            assert error["current_version"] == 1

    @pytest.mark.parametrize("value", ["1.0", "1_0", " 1", "1 ", "+1", "-1", "0x1", "1e0", "\u0661", "", "٣"])
    def test_an_expected_version_of_anything_but_ascii_digits_is_422(self, posts: ApiClient, value: str) -> None:
        post_id = new_post(posts)
        error = expect_error(posts.delete(f"/posts/{post_id}", query={"expected_version": value}),
                             422, "validation_error")
        assert error["detail"][0]["loc"] == ["query", "expected_version"]
        assert posts.get(f"/posts/{post_id}").status == 200  # nothing was deleted

    @pytest.mark.parametrize("value", ["1_0", "1.0", " 5", "5 ", "+5", "05.", "\u0665", "5\n"])
    def test_a_limit_of_anything_but_ascii_digits_is_422(self, profiles: ApiClient, value: str) -> None:
        user_id = new_user(profiles)
        error = expect_error(profiles.get(f"/users/{user_id}/posts", query={"limit": value}), 422, "validation_error")
        assert error["detail"][0]["loc"] == ["query", "limit"]

    def test_digits_still_work_and_the_range_still_holds(self, profiles: ApiClient) -> None:
        user_id = new_user(profiles)
        assert profiles.get(f"/users/{user_id}/posts", query={"limit": "5"}).status == 200
        assert profiles.get(f"/users/{user_id}/posts", query={"limit": "007"}).status == 200
        for value in ("0", "101", str(10**40)):
            expect_error(profiles.get(f"/users/{user_id}/posts", query={"limit": value}), 422, "validation_error")

    def test_a_percent_encoded_space_in_the_query_is_refused(self, profiles: ApiClient) -> None:
        user_id = new_user(profiles)
        expect_error(profiles.get(f"/users/{user_id}/posts?limit=%205"), 422, "validation_error")


# -- defect 9: path ids ---------------------------------------------------------------------------
def loose_forms(canonical: str) -> list[str]:
    value = uuid.UUID(canonical)
    return [canonical.upper(), "{" + canonical + "}", "urn:uuid:" + canonical, value.hex,
            canonical + "%0A", canonical + "%20", "%20" + canonical, canonical + "%09", canonical[:-1] + "A"]


class TestPathIds:
    def test_only_the_canonical_form_finds_a_post(self, posts: ApiClient) -> None:
        post_id = new_post(posts)
        assert posts.get(f"/posts/{post_id}").status == 200
        for loose in loose_forms(post_id):
            expect_error(posts.get(f"/posts/{loose}"), 404, "not_found")
            expect_error(posts.patch(f"/posts/{loose}", {"text": "x", "expected_version": 1}), 404, "not_found")
            expect_error(posts.delete(f"/posts/{loose}"), 404, "not_found")
        assert posts.get(f"/posts/{post_id}").json["version"] == 1  # nothing was changed

    def test_only_the_canonical_form_finds_a_user(self, profiles: ApiClient) -> None:
        user_id = new_user(profiles)
        for loose in loose_forms(user_id):
            expect_error(profiles.get(f"/users/{loose}"), 404, "not_found")
            expect_error(profiles.get(f"/users/{loose}/posts"), 404, "not_found")
            expect_error(profiles.patch(f"/users/{loose}", {"display_name": "x"}), 404, "not_found")

    def test_a_key_under_a_loose_spelling_neither_acts_nor_holds_the_key(self, posts: ApiClient) -> None:
        post_id = new_post(posts)
        key = {"Idempotency-Key": "edit-1"}
        body = {"text": "edited", "expected_version": 1}
        expect_error(posts.patch(f"/posts/{post_id.upper()}", body, headers=key), 404, "not_found")
        first = posts.patch(f"/posts/{post_id}", body, headers=key)
        again = posts.patch(f"/posts/{post_id}", body, headers=key)
        assert first.status == again.status == 200 and first.json == again.json == {"post_id": post_id, "version": 2}

    @pytest.mark.parametrize("segment", ["%23", "not-a-uuid", "%0A", "a%22b", "%E2%82%AC", "x%5Cy", "%60"])
    def test_a_bad_id_is_checked_after_the_body_like_any_unknown_resource(
        self, posts: ApiClient, profiles: ApiClient, segment: str
    ) -> None:
        """Decided: a malformed id is an unknown resource (404, a state check), so a bad body is 422 first."""
        expect_error(posts.patch(f"/posts/{segment}", {"text": ""}), 422, "validation_error")
        expect_error(posts.patch(f"/posts/{segment}", b"{"), 400, "bad_request")
        expect_error(posts.patch(f"/posts/{segment}", {"text": "x", "expected_version": 1}), 404, "not_found")
        expect_error(posts.get(f"/posts/{segment}"), 404, "not_found")
        expect_error(posts.delete(f"/posts/{segment}", query={"expected_version": "x"}), 422, "validation_error")
        expect_error(posts.delete(f"/posts/{segment}"), 404, "not_found")
        expect_error(profiles.patch(f"/users/{segment}", {"display_name": ""}), 422, "validation_error")
        expect_error(profiles.get(f"/users/{segment}/posts", query={"limit": "0"}), 422, "validation_error")
        expect_error(profiles.get(f"/users/{segment}/posts"), 404, "not_found")

    def test_a_bad_tag_segment_is_422_like_any_bad_tag(self, posts: ApiClient) -> None:
        for segment in ("%23x", "a%0A", "%E2%82%AC"):
            expect_error(posts.get(f"/tags/{segment}"), 422, "validation_error")
        assert posts.get("/tags/Intro").json == {"tag": "intro", "post_count": 0}
