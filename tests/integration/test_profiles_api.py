"""The profiles API, route by route and error by error (docs/api.md "profiles", "errors", "idempotency").

Every request is an API Gateway REST proxy event (eventstack.apigw) given to the real handler
(`profiles.api.build`), on the in-memory store (unit tier) and on DynamoDB under moto
(integration). The read models are small fakes here, except in `TestWithTheRealReadModels`,
which projects the stores' events with the real projectors into moto tables and reads them
through profiles.readmodels.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from escore.http_idempotency import request_hash
from escore.store import EventStore, IdempotencyKey
from profiles import api as profiles_api
from tests.support.api import ApiClient, ApiResponse, expect_error, routes_of
from tests.support.fakes import FakeProfiles, FakeTimeline
from tests.support.stores import STORE_KINDS, event_store, mocked_aws


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    with mocked_aws() as client:
        yield client


class Profiles:
    def __init__(self, store: EventStore, env: dict[str, str]) -> None:
        self.store = store
        self.counts = FakeProfiles()
        self.timeline = FakeTimeline()
        handler = profiles_api.build(env, store, profiles=self.counts, timeline=self.timeline)
        self.client = ApiClient(handler, routes_of("profiles"))

    def register(self, handle: str = "alice", name: str = "Alice", **kwargs: Any) -> ApiResponse:
        return self.client.post("/users", {"handle": handle, "display_name": name}, **kwargs)

    def user(self, handle: str = "alice") -> str:
        response = self.register(handle, handle.title())
        assert response.status == 201, response
        user_id: str = response.json["user_id"]
        return user_id

    def events(self, user_id: str) -> list[Any]:
        return self.store.read(f"user-{user_id}")

    def all_events(self) -> list[Any]:
        return list(self.store.iter_all())


@pytest.fixture(params=STORE_KINDS)
def profiles(request: pytest.FixtureRequest) -> Profiles:
    return Profiles(*event_store(request.param, "profiles", request))


class TestRegister:
    def test_201_with_the_new_id_and_version_1(self, profiles: Profiles) -> None:
        response = profiles.register()
        assert response.status == 201 and set(response.json) == {"user_id", "version"}
        user_id = response.json["user_id"]
        assert str(uuid.UUID(user_id)) == user_id and response.json["version"] == 1
        [event] = profiles.events(user_id)
        assert (event.type, event.stream_id, event.version, event.service) == (
            "UserRegistered", f"user-{user_id}", 1, "profiles",
        )
        assert event.data == {"user_id": user_id, "handle": "alice", "display_name": "Alice"}

    def test_a_taken_handle_is_409_handle_taken(self, profiles: Profiles) -> None:
        profiles.user("alice")
        expect_error(profiles.register("alice", "Another Alice"), 409, "handle_taken")
        assert len(profiles.all_events()) == 1
        assert profiles.register("alice2", "x").status == 201

    @pytest.mark.parametrize("handle", ["al", "a" * 31, "Alice", "al-ice", "al ice", "alice\n", "ålice", "", 5, None])
    def test_a_bad_handle_is_422(self, profiles: Profiles, handle: Any) -> None:
        body = expect_error(profiles.register(handle, "x"), 422, "validation_error")
        assert [d["loc"] for d in body["detail"]] == [["body", "handle"]]

    @pytest.mark.parametrize("handle", ["abc", "a" * 30, "a_1", "___", "123"])
    def test_good_handles(self, profiles: Profiles, handle: str) -> None:
        assert profiles.register(handle, "x").status == 201

    def test_display_name_of_1_to_100_characters(self, profiles: Profiles) -> None:
        assert profiles.register("abc", "x" * 100).status == 201
        for name in ("", "x" * 101, None, 1):
            body = expect_error(profiles.register("abd", name), 422, "validation_error")
            assert [d["loc"] for d in body["detail"]] == [["body", "display_name"]]

    def test_missing_and_unknown_fields_are_422(self, profiles: Profiles) -> None:
        body = expect_error(profiles.client.post("/users", {"handle": "abc", "bio": "x"}), 422, "validation_error")
        assert {tuple(d["loc"]) for d in body["detail"]} == {("body", "display_name"), ("body", "bio")}
        assert profiles.all_events() == []


class TestRead:
    def test_the_profile_from_the_events_and_post_count_from_the_projection(self, profiles: Profiles) -> None:
        user_id = profiles.user("alice")
        profiles.counts.counts[user_id] = 4
        assert profiles.client.get(f"/users/{user_id}").json == {
            "user_id": user_id, "handle": "alice", "display_name": "Alice", "version": 1, "post_count": 4,
        }

    def test_every_answered_command_is_visible_at_once(self, profiles: Profiles) -> None:
        user_id = profiles.user("alice")
        for n in range(1, 4):
            assert profiles.client.patch(f"/users/{user_id}", {"display_name": f"A{n}"}).status == 200
            body = profiles.client.get(f"/users/{user_id}").json
            assert (body["display_name"], body["version"]) == (f"A{n}", n + 1)

    def test_unknown_or_malformed_id_is_404(self, profiles: Profiles) -> None:
        expect_error(profiles.client.get(f"/users/{uuid.uuid4()}"), 404, "not_found")
        expect_error(profiles.client.get("/users/alice"), 404, "not_found")


class TestChangeDisplayName:
    def test_200_with_the_new_version(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        response = profiles.client.patch(f"/users/{user_id}", {"display_name": "Al", "expected_version": 1})
        assert (response.status, response.json) == (200, {"user_id": user_id, "version": 2})
        assert profiles.events(user_id)[1].type == "DisplayNameChanged"
        assert profiles.events(user_id)[1].data == {"display_name": "Al"}

    def test_expected_version_is_optional(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        assert profiles.client.patch(f"/users/{user_id}", {"display_name": "Al"}).json["version"] == 2
        assert profiles.client.patch(f"/users/{user_id}", {"display_name": "A", "expected_version": None}).status == 200

    def test_a_stale_expected_version_is_409_with_the_current_one(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        profiles.client.patch(f"/users/{user_id}", {"display_name": "Al"})
        body = expect_error(profiles.client.patch(f"/users/{user_id}", {"display_name": "B", "expected_version": 1}),
                            409, "conflict")
        assert body["current_version"] == 2 and len(profiles.events(user_id)) == 2

    def test_expected_version_below_1_is_422(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        for value in (0, -1, "2", True):
            body = expect_error(profiles.client.patch(f"/users/{user_id}", {"display_name": "B", "expected_version": value}),
                                422, "validation_error")
            assert body["detail"][0]["loc"][:2] == ["body", "expected_version"]

    def test_bad_bodies(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        path = f"/users/{user_id}"
        expect_error(profiles.client.patch(path, {"display_name": ""}), 422, "validation_error")
        expect_error(profiles.client.patch(path, {"display_name": "x", "handle": "new"}), 422, "validation_error")
        expect_error(profiles.client.patch(path, {}), 422, "validation_error")
        expect_error(profiles.client.patch(path, "nope"), 400, "bad_request")
        expect_error(profiles.client.patch(path, '"x"'), 400, "bad_request")
        assert len(profiles.events(user_id)) == 1

    def test_unknown_user_is_404(self, profiles: Profiles) -> None:
        expect_error(profiles.client.patch(f"/users/{uuid.uuid4()}", {"display_name": "x"}), 404, "not_found")
        expect_error(profiles.client.patch("/users/alice", {"display_name": "x"}), 404, "not_found")


def entry(n: int) -> dict[str, str]:
    return {"post_id": f"p{n}", "text": f"t{n}", "created_at": f"2030-01-01T00:00:{n:02d}.000000Z"}


class TestUserPosts:
    def test_a_page_of_the_timeline_newest_first(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        profiles.timeline.items[user_id] = [entry(n) for n in range(1, 6)]
        body = profiles.client.get(f"/users/{user_id}/posts", query={"limit": "2"}).json
        assert body == {"items": [entry(5), entry(4)], "next_cursor": "c2"}
        body = profiles.client.get(f"/users/{user_id}/posts", query={"limit": "2", "cursor": "c4"}).json
        assert body == {"items": [entry(1)], "next_cursor": None}
        assert profiles.timeline.calls[-1] == (user_id, 2, "c4")

    def test_defaults(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        assert profiles.client.get(f"/users/{user_id}/posts").json == {"items": [], "next_cursor": None}
        profiles.client.get(f"/users/{user_id}/posts", query={"cursor": ""})  # an empty cursor: the first page
        assert [call[1:] for call in profiles.timeline.calls] == [(20, None), (20, None)]

    @pytest.mark.parametrize("limit", ["abc", "0", "101", "-1", "2.5", ""])
    def test_a_bad_limit_is_422(self, profiles: Profiles, limit: str) -> None:
        user_id = profiles.user()
        body = expect_error(profiles.client.get(f"/users/{user_id}/posts", query={"limit": limit}), 422, "validation_error")
        assert body["detail"][0]["loc"] == ["query", "limit"]

    def test_limits_1_and_100(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        for limit in ("1", "100"):
            assert profiles.client.get(f"/users/{user_id}/posts", query={"limit": limit}).status == 200

    def test_an_invalid_cursor_is_422(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        body = expect_error(profiles.client.get(f"/users/{user_id}/posts", query={"cursor": "zz"}), 422, "validation_error")
        assert body["detail"][0]["loc"] == ["query", "cursor"]

    def test_an_unknown_user_is_404_after_the_request_checks(self, profiles: Profiles) -> None:
        path = f"/users/{uuid.uuid4()}/posts"
        expect_error(profiles.client.get(path), 404, "not_found")
        expect_error(profiles.client.get(path, query={"cursor": "zz"}), 422, "validation_error")
        expect_error(profiles.client.get(path, query={"limit": "abc"}), 422, "validation_error")
        expect_error(profiles.client.get("/users/bob/posts"), 404, "not_found")


class TestErrors:
    def test_unknown_route_is_404(self, profiles: Profiles) -> None:
        for path in ("/user", "/users/a/b/c", "/posts", "/"):
            expect_error(profiles.client.get(path), 404, "not_found")

    def test_wrong_method_is_405(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        response = profiles.client.delete(f"/users/{user_id}")
        expect_error(response, 405, "method_not_allowed")
        assert response.headers["Allow"] == "GET, PATCH"
        expect_error(profiles.client.get("/users"), 405, "method_not_allowed")
        expect_error(profiles.client.post(f"/users/{user_id}/posts", {}), 405, "method_not_allowed")

    def test_413_400_on_post(self, profiles: Profiles) -> None:
        expect_error(profiles.register("abc", "x" * 70_000), 413, "payload_too_large")
        expect_error(profiles.client.post("/users", "{,}"), 400, "bad_request")
        expect_error(profiles.client.post("/users", "[]"), 400, "bad_request")
        response = profiles.client.post("/users", '{"handle": "abc", "display_name": "x"}',
                                        headers={"Content-Type": "application/xml"})
        expect_error(response, 400, "bad_request")
        assert profiles.all_events() == []


class TestIdempotency:
    def test_a_retried_registration_returns_the_first_answer_and_appends_nothing(self, profiles: Profiles) -> None:
        first = profiles.register("alice", "Alice", headers={"Idempotency-Key": "r1"})
        again = profiles.register("alice", "Alice", headers={"Idempotency-Key": "r1"})
        assert (again.status, again.json) == (201, first.json)  # not handle_taken: the first answer again
        assert len(profiles.all_events()) == 1

    def test_another_body_with_the_key_is_409(self, profiles: Profiles) -> None:
        profiles.register("alice", "Alice", headers={"Idempotency-Key": "r1"})
        expect_error(profiles.register("bob", "Bob", headers={"Idempotency-Key": "r1"}), 409, "idempotency_key_reused")
        assert len(profiles.all_events()) == 1

    def test_a_taken_handle_is_not_kept(self, profiles: Profiles) -> None:
        profiles.user("alice")
        key = {"Idempotency-Key": "r2"}
        expect_error(profiles.register("alice", "x", headers=key), 409, "handle_taken")
        expect_error(profiles.register("alice", "x", headers=key), 409, "handle_taken")  # evaluated afresh

    def test_a_retried_change_returns_the_first_answer(self, profiles: Profiles) -> None:
        user_id = profiles.user()
        key = {"Idempotency-Key": "c1"}
        first = profiles.client.patch(f"/users/{user_id}", {"display_name": "B"}, headers=key)
        again = profiles.client.patch(f"/users/{user_id}", {"display_name": "B"}, headers=key)
        assert (again.status, again.json) == (200, first.json) == (200, {"user_id": user_id, "version": 2})
        assert len(profiles.events(user_id)) == 2

    def test_a_retry_while_the_first_runs_is_409(self, profiles: Profiles) -> None:
        body = {"handle": "alice", "display_name": "Alice"}
        profiles.store.begin_idempotent(IdempotencyKey("POST /users", "busy"), request_hash(body))
        expect_error(profiles.client.post("/users", body, headers={"Idempotency-Key": "busy"}),
                     409, "idempotency_in_progress")
        assert profiles.all_events() == []


class TestCorrelation:
    def test_the_id_is_echoed_and_carried_by_the_events(self, profiles: Profiles) -> None:
        response = profiles.register(headers={"X-Correlation-Id": "trace-7"})
        assert response.correlation_id == "trace-7"
        assert profiles.events(response.json["user_id"])[0].metadata["correlation_id"] == "trace-7"
        change = profiles.client.patch(f"/users/{response.json['user_id']}", {"display_name": "B"})
        assert profiles.events(response.json["user_id"])[1].metadata["correlation_id"] == change.correlation_id
        uuid.UUID(change.correlation_id)


@pytest.mark.integration
class TestWithTheRealReadModels:
    """Commands through both APIs, events projected by the real projectors, reads through readmodels."""

    def test_post_count_and_timeline(self, aws: Any, request: pytest.FixtureRequest) -> None:
        from escore.engine import Delivery, Projector, position_of
        from posts import api as posts_api
        from profiles.projectors import user_profiles, user_timeline
        from tests.support.aws import create_projection_table

        profile_store, profiles_env = event_store("dynamodb", "profiles", request)
        post_store, posts_env = event_store("dynamodb", "posts", request)
        tables = {
            "USER_PROFILES_TABLE": create_projection_table(aws, "user_profiles"),
            "USER_TIMELINE_TABLE": create_projection_table(aws, "user_timeline"),
        }
        users = ApiClient(profiles_api.build({**profiles_env, **tables}), routes_of("profiles"))
        posts = ApiClient(posts_api.build(posts_env), routes_of("posts"))

        user_id = users.post("/users", {"handle": "reader", "display_name": "R"}).json["user_id"]
        post_ids = [posts.post("/posts", {"author_id": user_id, "text": f"post {n}"}).json["post_id"] for n in range(5)]
        assert posts.delete(f"/posts/{post_ids[1]}").status == 200
        assert users.get(f"/users/{user_id}").json["post_count"] == 0  # nothing projected yet

        events = [*profile_store.iter_all(), *post_store.iter_all()]
        delivered = [Delivery(e, e.service, position_of(n)) for n, e in enumerate(events, start=1)]
        for spec, table in ((user_profiles.PROJECTION, tables["USER_PROFILES_TABLE"]),
                            (user_timeline.PROJECTION, tables["USER_TIMELINE_TABLE"])):
            result = Projector(spec, table, aws).apply(delivered)
            assert not result.failed

        profile = users.get(f"/users/{user_id}").json
        assert (profile["handle"], profile["post_count"], profile["version"]) == ("reader", 4, 1)

        first = users.get(f"/users/{user_id}/posts", query={"limit": "3"}).json
        assert [item["post_id"] for item in first["items"]] == [post_ids[4], post_ids[3], post_ids[2]]
        assert set(first["items"][0]) == {"post_id", "text", "created_at"}
        assert first["next_cursor"]
        second = users.get(f"/users/{user_id}/posts", query={"limit": "3", "cursor": first["next_cursor"]}).json
        assert ([item["post_id"] for item in second["items"]], second["next_cursor"]) == ([post_ids[0]], None)

        bad = users.get(f"/users/{user_id}/posts", query={"cursor": "not-a-cursor"})
        assert expect_error(bad, 422, "validation_error")["detail"][0]["loc"] == ["query", "cursor"]
        expect_error(users.get(f"/users/{uuid.uuid4()}/posts"), 404, "not_found")
