"""The task list on a large table: a bounded count, no deep OFFSET, keyset paging instead."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import AsyncConnection

from tests.support.api import TASK, Api

MANY = 10_050  # past the count's cap (10,000)


async def seed_tasks(api: Api, count: int) -> list[int]:
    """`count` rows in the task read table (a few stopped), newest id first."""
    async with await AsyncConnection.connect(api.services.database_url, autocommit=True) as c:
        await c.execute(
            "INSERT INTO deduction_task (id, scheme_id, env_instance_id, name, status,"
            " scheme_snapshot, create_at, update_at, version)"
            " SELECT n, 1, 1, 'seeded-' || n, CASE WHEN n %% 1000 = 0 THEN 'stopped'"
            " ELSE 'pending' END, '{}'::jsonb, now(), now(), 1"
            " FROM generate_series(1, %s) AS n",
            [count],
        )
    return list(range(count, 0, -1))


async def listing(api: Api, query: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"{TASK}/list?{query}")
    assert status == 200, body
    return dict(body["data"])


@pytest.mark.slow
async def test_the_count_stops_at_its_cap_and_says_it_is_a_lower_bound(api: Api) -> None:
    """Past 10,000 matching tasks `total` is 10,000 with total_is_lower_bound; a filter
    matching fewer counts exactly."""
    await seed_tasks(api, MANY)

    everything = await listing(api, "size=5")
    stopped = await listing(api, "status=stopped")

    assert (everything["total"], everything["total_is_lower_bound"]) == (10_000, True)
    assert [t["id"] for t in everything["items"]] == [MANY, MANY - 1, MANY - 2, MANY - 3, MANY - 4]
    assert (stopped["total"], stopped["total_is_lower_bound"]) == (10, False)
    assert [t["id"] for t in stopped["items"]] == list(range(10_000, 0, -1000))


async def test_a_page_past_the_hundredth_is_422_naming_keyset_paging(api: Api) -> None:
    """Pages are numbered up to 100 (at most 9,900 rows skipped), whatever the table holds:
    page 101 is 422 and says to use after_id; the document says the same bound."""
    await seed_tasks(api, 120)

    last_numbered = await listing(api, "page=100&size=1")
    status, body = await api.call("GET", f"{TASK}/list?page=101&size=1")
    _, document = await api.call("GET", "/schema/openapi.json")

    assert [t["id"] for t in last_numbered["items"]] == [21]
    assert (status, body["code"]) == (422, 422)
    assert body["message"] == (
        "page must be between 1 and 100: page deeper by keyset, passing after_id = the"
        " next_cursor of the previous page"
    )
    assert body["data"]["errors"] == [{"field": "page", "message": body["message"]}]
    params = document["paths"][f"{TASK}/list"]["get"]["parameters"]
    assert next(p for p in params if p["name"] == "page")["schema"]["maximum"] == 100


@pytest.mark.slow
async def test_keyset_pages_walk_every_task_once_in_order(api: Api) -> None:
    """Following next_cursor from the first page reaches every task once, newest first, and
    the last page says there is no next one; a status filter pages the same way."""
    ids = await seed_tasks(api, MANY)

    seen: list[int] = []
    page = await listing(api, "size=100")
    while True:
        seen += [t["id"] for t in page["items"]]
        if page["next_cursor"] is None:
            break
        assert page["next_cursor"] == seen[-1]
        page = await listing(api, f"size=100&after_id={page['next_cursor']}")
    stopped = await listing(api, "status=stopped&size=4&after_id=7500")

    assert seen == ids
    assert [t["id"] for t in stopped["items"]] == [7000, 6000, 5000, 4000]
    assert stopped["next_cursor"] == 4000 and stopped["total"] == 10


async def test_the_last_page_has_no_cursor_and_after_id_is_bounded(api: Api) -> None:
    """A page holding the last task has next_cursor null; after_id must be a valid id."""
    await seed_tasks(api, 3)

    exact = await listing(api, "size=3")
    status, body = await api.call("GET", f"{TASK}/list?after_id=0")

    assert (exact["next_cursor"], exact["total"], exact["total_is_lower_bound"]) == (None, 3, False)
    assert (await listing(api, "size=2"))["next_cursor"] == 2
    assert (status, body["message"]) == (422, "after_id must be between 1 and 9007199254740991")
