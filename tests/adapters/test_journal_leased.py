"""The journal's two merged writes (issue 12): a submit that takes its intent's lease, and a
transition that releases it, each in one transaction, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from flex_bridge.adapters.journal import Journal
from tests.adapters import test_journal as contract
from tests.adapters.test_journal import FakeClock, make

# The contract tests' fixtures: each test runs on SQLite and on PostgreSQL.
backend, clock, store, journal = contract.backend, contract.clock, contract.store, contract.journal


async def test_submit_leased_records_the_intent_and_takes_its_lease(
    journal: Journal, clock: FakeClock
) -> None:
    intent, created, token = await journal.submit_leased(make(), "a", 30)
    assert created and token is not None
    assert await journal.get(intent.intent_id) == intent
    assert await journal.acquire_lease(intent.intent_id, "b", 30) is None  # a holds it
    assert await journal.acquire_lease(intent.intent_id, "a", 30) == token  # a renewal
    moved = await journal.transition(
        intent.intent_id, ("recorded",), fence=token, state="announced"
    )
    assert moved is not None and moved.state == "announced"
    clock.advance(31)
    taken = await journal.acquire_lease(intent.intent_id, "b", 30)
    assert taken is not None and taken > token


async def test_submit_leased_takes_no_lease_when_it_joins_another_intent(
    journal: Journal,
) -> None:
    first, _, token = await journal.submit_leased(make(), "a", 30)
    joined, created, none = await journal.submit_leased(make(), "b", 30)
    assert (joined, created, none) == (first, False, None)
    assert await journal.acquire_lease(first.intent_id, "b", 30) is None  # still a's
    assert token is not None


async def test_a_release_with_the_transition_frees_the_lease_only_if_the_change_is_made(
    journal: Journal,
) -> None:
    intent, _, token = await journal.submit_leased(make(), "a", 30)
    iid = intent.intent_id
    # Refused (not in the expected state): the lease stays a's.
    refused = await journal.transition(iid, ("applied",), fence=token, release="a", state="settled")
    assert refused is None
    assert await journal.acquire_lease(iid, "b", 30) is None
    # Made: the change and the release in one transaction; the fence held for the change.
    moved = await journal.transition(iid, ("recorded",), fence=token, release="a", state="settled")
    assert moved is not None and moved.state == "settled"
    taken = await journal.acquire_lease(iid, "b", 30)
    assert taken is not None and token is not None and taken > token


async def test_a_release_names_its_owner(journal: Journal) -> None:
    intent, _, token = await journal.submit_leased(make(), "a", 30)
    moved = await journal.transition(
        intent.intent_id, ("recorded",), release="b", state="announced"
    )
    assert moved is not None  # made, but b holds nothing: a's lease stays
    assert await journal.acquire_lease(intent.intent_id, "b", 30) is None
    assert await journal.acquire_lease(intent.intent_id, "a", 30) == token
