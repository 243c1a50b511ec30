"""Create with an Idempotency-Key: a retry gets the first answer back, even after a lost reply."""

from __future__ import annotations

from deduction.application.service import AgentConfig, NewTask
from tests.support.api import TASK, Api
from tests.support.plan import plan_task


def key(value: str) -> dict[str, dict[str, str]]:
    return {"headers": {"Idempotency-Key": value}}


async def test_a_retried_create_with_the_same_key_gets_the_same_answer(catalog: Api) -> None:
    """The second call answers 200 with the first call's body, and no second task exists."""
    first = await catalog.call("POST", f"{TASK}/create", json=plan_task(), **key("order-1"))
    again = await catalog.call("POST", f"{TASK}/create", json=plan_task(), **key("order-1"))
    assert first[0] == again[0] == 200, (first, again)
    assert again[1] == first[1]
    _, page = await catalog.call("GET", f"{TASK}/list")
    assert page["data"]["total"] == 1


async def test_a_create_whose_reply_was_lost_is_answered_on_retry(catalog: Api) -> None:
    """Saved but never answered: the client's retry with its key gets its own task, not 409."""
    body = plan_task()
    new = NewTask(
        name=body["name"],
        description=body["description"],
        scheme_id=body["scheme_id"],
        env_instance_id=body["env_instance_id"],
        agent_configs=[
            AgentConfig(c["agent_meta_id"], c["side"], c["params"]) for c in body["agent_configs"]
        ],
    )
    lost = await catalog.services.run_sync(
        catalog.services.app.create_task, new, "anonymous", "lost-reply-7"
    )
    status, answer = await catalog.call("POST", f"{TASK}/create", json=body, **key("lost-reply-7"))
    assert status == 200, answer
    assert answer["data"]["task_id"] == lost.data["task_id"]
    assert answer["data"]["status"] == "pending"
    status, detail = await catalog.call("GET", f"{TASK}/{lost.data['task_id']}")
    assert status == 200 and detail["data"]["name"] == body["name"]
    status, _ = await catalog.call("POST", f"{TASK}/create", json=body)
    assert status == 409  # without the key it is another create of a taken name


async def test_the_same_key_with_another_body_is_refused_naming_the_key(catalog: Api) -> None:
    """A key belongs to one request: reusing it for a different one is a 422 naming it."""
    status, _ = await catalog.call("POST", f"{TASK}/create", json=plan_task(), **key("k-9"))
    assert status == 200
    status, body = await catalog.call(
        "POST", f"{TASK}/create", json=plan_task(name="other"), **key("k-9")
    )
    assert status == 422, body
    assert "k-9" in body["message"]
    assert body["data"]["errors"][0]["field"] == "Idempotency-Key"


async def test_an_unusable_key_is_refused(catalog: Api) -> None:
    """Keys are 1..255 printable ASCII characters."""
    status, body = await catalog.call("POST", f"{TASK}/create", json=plan_task(), **key("x" * 256))
    assert status == 422, body
    status, _ = await catalog.call("GET", f"{TASK}/list")
    assert status == 200


async def test_the_openapi_document_names_the_header(api: Api) -> None:
    status, doc = await api.call("GET", "/schema/openapi.json")
    assert status == 200
    create = doc["paths"][f"{TASK}/create"]["post"]
    names = {(p["name"], p["in"]) for p in create.get("parameters", [])}
    assert ("Idempotency-Key", "header") in names
