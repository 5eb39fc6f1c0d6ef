"""The User aggregate (pure), and registration's handle claim through the Repository."""

from __future__ import annotations

import pytest

from escore.aggregate import AggregateNotFound, CommandContext, Repository, VersionConflict
from escore.memory_store import InMemoryEventStore
from escore.store import Claim, ClaimTaken
from profiles.domain import HANDLE_CLAIM, DisplayNameChanged, User, UserRegistered

pytestmark = pytest.mark.unit


def registered(user_id: str = "u1", handle: str = "alice", name: str = "Alice") -> User:
    user = User(user_id)
    user.mutate(UserRegistered(user_id=user_id, handle=handle, display_name=name), "2030-01-01T00:00:00.000000Z")
    return user


class TestUser:
    def test_register_decides_the_event_and_the_handle_claim(self) -> None:
        user = User("u1")
        events, claims = user.register("alice", "Alice")
        assert events == [UserRegistered(user_id="u1", handle="alice", display_name="Alice")]
        assert claims == [Claim(HANDLE_CLAIM, "alice", owner="user-u1")]
        assert user.version == 0

    def test_a_user_registers_once(self) -> None:
        with pytest.raises(VersionConflict):
            registered().register("bob", "Bob")

    def test_state_is_the_fold_of_its_events(self) -> None:
        user = registered()
        user.mutate(DisplayNameChanged(display_name="Al"), "2030-01-02T00:00:00.000000Z")
        assert (user.version, user.handle, user.display_name) == (2, "alice", "Al")
        assert user.view(post_count=3) == {
            "user_id": "u1", "handle": "alice", "display_name": "Al", "version": 2, "post_count": 3,
        }

    def test_change_display_name_checks_existence_then_version(self) -> None:
        with pytest.raises(AggregateNotFound):
            User("u1").change_display_name("x", None)
        user = registered()
        assert user.change_display_name("Al", None) == [DisplayNameChanged(display_name="Al")]
        assert user.change_display_name("Al", 1) == [DisplayNameChanged(display_name="Al")]
        with pytest.raises(VersionConflict) as raised:
            user.change_display_name("Al", 2)
        assert raised.value.current_version == 1

    def test_snapshot_state_round_trips(self) -> None:
        user = registered()
        again = User("u1")
        again.restore_state(user.state())
        assert (again.handle, again.display_name) == ("alice", "Alice")


class TestRegistration:
    def test_the_handle_is_claimed_in_the_same_append(self) -> None:
        store = InMemoryEventStore()
        users = Repository(store, User, "profiles")
        first = User("u1")
        events, claims = first.register("alice", "Alice")
        users.save(first, events, CommandContext("c"), claims=claims)
        assert store.claim_owner(HANDLE_CLAIM, "alice") == "user-u1"

        second = User("u2")
        events, claims = second.register("alice", "Other")
        with pytest.raises(ClaimTaken):
            users.save(second, events, CommandContext("c"), claims=claims)
        assert store.current_version("user-u2") == 0  # nothing written
        assert not users.load("u2").exists
