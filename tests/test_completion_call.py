"""PostgreSQL answers the common completions in one call (``webhook_complete_batch``).

Each test calls it directly on a registered manifest and checks what it
answered and the rows it left: it must answer exactly the two common cases and
write nothing at all in every other. (The HTTP tests, which run on both
databases, check that the answers users see are the same either way, and
test_renotification races it on threads.) On SQLite, which has no such
function, these skip.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import signed_headers
from tests.test_webhook_http import notification, register
from webhook import completion_call, db
from webhook.deliveries import Delivery
from webhook.model_base import COMPLETED, INGESTING
from webhook.models import Batch, Manifest
from webhook.schemas import parse_notification

RECEIVED = dt.datetime(2026, 12, 6, 12, 0, 0)


@pytest.fixture
def three_batches(app, admin):
    """2/letters registered with batches 1234, 1235 and 1236, all ingesting."""
    if not db.is_postgres():
        pytest.skip("the function exists on PostgreSQL only; CI runs these with "
                    "WEBHOOK_TEST_DATABASE=postgresql")
    response = register(app.test_client(), admin, batches=(1234, 1235, 1236))
    assert response.status_code == 202, response.get_data(as_text=True)
    return Manifest.get().id


def call(delivery_id: str, batch: int = 1234, **changes):
    completion = parse_notification(notification(id=batch, **changes))
    return completion_call.complete_batch(delivery_id, "webhook", RECEIVED,
                                          notification(id=batch, **changes), completion)


def statuses() -> dict[int, str]:
    return {b.id: b.status for b in Batch.select()}


def deliveries() -> dict[str, tuple[str, str | None, int | None]]:
    return {d.delivery_id: (d.outcome, d.manifest, d.failed_assets) for d in Delivery.select()}


def test_a_first_completion_leaving_others_ingesting_is_recorded(three_batches):
    answered = call("msg_1", count=7, completed=5, errors=2)

    assert answered == completion_call.Answered("batch-completed", three_batches, 2, "2/letters")
    batch = Batch.get_by_id(1234)
    assert (batch.status, batch.count, batch.completed, batch.errors) == (COMPLETED, 7, 5, 2)
    assert batch.processed == RECEIVED
    assert statuses() == {1234: COMPLETED, 1235: INGESTING, 1236: INGESTING}
    assert deliveries() == {"msg_1": ("batch-completed", "2/letters", 2)}


def test_a_renotification_of_a_complete_batch_is_a_duplicate(three_batches):
    call("msg_1", count=7)
    answered = call("msg_2", count=8)

    assert answered.outcome == "duplicate"
    assert answered.manifest_key == "2/letters"
    assert Batch.get_by_id(1234).count == 7          # the first completion stands
    assert deliveries() == {"msg_1": ("batch-completed", "2/letters", None),
                            "msg_2": ("duplicate", "2/letters", None)}


def test_the_last_batch_is_left_to_the_locked_path(three_batches):
    call("msg_1", batch=1234)
    call("msg_2", batch=1235)

    assert call("msg_3", batch=1236) is None         # its completion claims the rebuild
    assert statuses() == {1234: COMPLETED, 1235: COMPLETED, 1236: INGESTING}
    assert "msg_3" not in deliveries()
    assert not Manifest.get_by_id(three_batches).needs_rebuild


def test_a_batch_whose_only_other_ingesting_one_was_dropped_is_the_last(three_batches):
    call("msg_1", batch=1234)
    Batch.update(status="dropped").where(Batch.id == 1236).execute()

    assert call("msg_2", batch=1235) is None         # the last one ingesting: locked path
    assert statuses() == {1234: COMPLETED, 1235: INGESTING, 1236: "dropped"}
    assert "msg_2" not in deliveries()


@pytest.mark.parametrize("second_batch", [1234, 1235], ids=["complete", "ingesting"])
def test_an_id_recorded_already_writes_nothing(three_batches, second_batch):
    call("msg_1", batch=1234, count=7)

    assert call("msg_1", batch=second_batch, count=9) is None
    assert statuses() == {1234: COMPLETED, 1235: INGESTING, 1236: INGESTING}
    assert Batch.get_by_id(1234).count == 7
    assert deliveries() == {"msg_1": ("batch-completed", "2/letters", None)}


@pytest.mark.parametrize("changes", [{"customer": 3}, {"customer": 2**63 - 2}, {"id": 9999}],
                         ids=["another customer", "a customer beyond 32 bits", "unknown batch"])
def test_a_batch_not_the_senders_writes_nothing(three_batches, changes):
    batch = changes.pop("id", 1234)
    assert call("msg_1", batch=batch, **changes) is None
    assert statuses() == {1234: INGESTING, 1235: INGESTING, 1236: INGESTING}
    assert deliveries() == {}


def test_a_manifest_needing_a_rebuild_is_left_to_the_locked_path(three_batches):
    call("msg_1", batch=1234)
    Manifest.update(needs_rebuild=True).where(Manifest.id == three_batches).execute()

    assert call("msg_2", batch=1234) is None
    assert deliveries() == {"msg_1": ("batch-completed", "2/letters", None)}


def test_a_dropped_batch_writes_nothing(three_batches):
    Batch.update(status="dropped").where(Batch.id == 1235).execute()

    assert call("msg_1", batch=1235) is None
    assert statuses() == {1234: INGESTING, 1235: "dropped", 1236: INGESTING}
    assert deliveries() == {}


def test_the_webhook_takes_the_one_call_for_the_common_cases(app, three_batches, statements):
    # Without it the answers would be the same (the locked path gives them too):
    # what shows the one call is taken is the statements each delivery runs.
    client = app.test_client()
    body = notification(id=1234)
    for msg_id, outcome in (("msg_1", "batch-completed"), ("msg_2", "duplicate")):
        statements.clear()
        answer = client.post("/webhooks/batch-completed", data=body,
                             headers=signed_headers(body, msg_id=msg_id))
        assert answer.get_json()["outcome"] == outcome
        assert len(statements) == 1, statements
        assert "webhook_complete_batch" in statements[0]


def test_undoing_migration_0009_puts_back_the_function_it_replaced(three_batches):
    # 0009 replaced 0007's definition (a count of the batches ingesting) by two
    # EXISTS; its down() must leave a function that still answers, as 0007's did.
    runner = db.migration_runner()
    name = "0009_completion_without_count"

    def definition() -> str:
        return db.database.execute_sql(
            "SELECT pg_get_functiondef('webhook_complete_batch'::regproc)").fetchone()[0]

    assert "EXISTS" in definition()
    try:
        # Back through 0009 (and whatever later migrations there may be), 0009 last.
        assert runner.down(name)[-1] == name
        assert "count(*) FILTER" in definition() and "EXISTS" not in definition()
        assert call("msg_1", batch=1234).outcome == "batch-completed"
        assert call("msg_2", batch=1235).outcome == "batch-completed"
        assert call("msg_3", batch=1236) is None     # the last one
    finally:
        runner.up()
    assert "EXISTS" in definition()
