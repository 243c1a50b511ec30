"""Authenticated callers: the recorded operator, JWTs, request ids, CORS and the secure default."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.config import SettingsError, check_exposure, load_settings
from tests.support.api import TASK, Api, free_port, serve_api
from tests.support.auth import bearer, issue, revoke, secured_api
from tests.support.plan import plan_task

SECRET = "s" * 40
JWT = {"auth_jwt_issuer": "https://idp.example", "auth_jwt_audience": "deduction"}


async def with_catalog(api: Api) -> Api:
    s = api.services
    assert await s.runner.wait_for(await s.run_sync(load_catalog, s.app, demo_catalog()), 10)
    return api


@pytest.fixture
async def secured(db_url: str) -> AsyncIterator[Api]:
    """The API with AUTH_MODE=on and the plan's catalog."""
    async with secured_api(db_url) as api:
        yield await with_catalog(api)


async def history_operators(api: Api, task_id: int, token: str) -> set[str]:
    status, body = await api.call("GET", f"{TASK}/{task_id}/history", headers=bearer(token))
    assert status == 200, body
    return {entry["operator"] for entry in body["data"]}


async def test_the_principal_is_the_recorded_operator_and_x_operator_is_ignored(
    secured: Api,
) -> None:
    """A plain operator token records its own name in the events, the history and the task,
    whatever X-Operator says."""
    s = secured.services
    alice = await issue(s, "alice", "operator")
    headers = {**bearer(alice), "X-Operator": "mallory"}
    status, body = await secured.call("POST", f"{TASK}/create", json=plan_task(), headers=headers)
    assert status == 200, body
    task_id = int(body["data"]["task_id"])
    status, _ = await secured.call("POST", f"{TASK}/{task_id}/stop", headers=headers)
    assert status == 200
    assert await history_operators(secured, task_id, alice) == {"alice"}
    status, detail = await secured.call("GET", f"{TASK}/{task_id}", headers=bearer(alice))
    assert detail["data"]["created_by"] == "alice"
    auditor = await issue(s, "audrey", "auditor")
    status, page = await secured.call(
        "GET", f"{TASK}/{task_id}/events", headers=bearer(auditor), params={"limit": "1000"}
    )
    assert status == 200, page
    recorded = {e["operator"] for e in page["data"]["events"] if e["operator"] is not None}
    assert "mallory" not in json.dumps(page) and recorded == {"alice"}


async def test_a_principal_acting_on_behalf_records_both_names(secured: Api) -> None:
    """A frontend's backend (role on_behalf) names the user in X-Operator: "alice via console";
    without X-Operator it records itself; a name too long to record with it is a 422."""
    console = await issue(secured.services, "console", "operator", "on_behalf")
    headers = {**bearer(console), "X-Operator": "alice"}
    status, body = await secured.call("POST", f"{TASK}/create", json=plan_task(), headers=headers)
    assert status == 200, body
    task_id = int(body["data"]["task_id"])
    await secured.call("POST", f"{TASK}/{task_id}/stop", headers=bearer(console))
    assert await history_operators(secured, task_id, console) == {"alice via console", "console"}
    long = {**bearer(console), "X-Operator": "x" * 60}
    status, body = await secured.call("POST", f"{TASK}/{task_id}/stop", headers=long)
    assert status == 422 and body["data"]["errors"][0]["field"] == "X-Operator", body


async def test_a_401_and_a_403_use_the_envelope_and_name_what_is_missing(secured: Api) -> None:
    viewer = await issue(secured.services, "vera", "viewer")
    status, body = await secured.call("POST", f"{TASK}/create", json=plan_task())
    assert (status, body["code"]) == (401, 401) and "Bearer" in body["message"], body
    status, body = await secured.call(
        "POST", f"{TASK}/create", json=plan_task(), headers=bearer(viewer)
    )
    assert (status, body["code"]) == (403, 403), body
    assert "needs the operator role" in body["message"] and "vera has viewer" in body["message"]
    status, body = await secured.call("GET", "/api/v1/events", headers=bearer(viewer))
    assert status == 403 and "the auditor role" in body["message"]


async def test_the_openapi_document_and_probes_need_no_token(secured: Api) -> None:
    for path in ("/health", "/schema/openapi.json"):
        status, _ = await secured.call("GET", path)
        assert status == 200, path


# -- JWT ---------------------------------------------------------------------------------


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    base = {"iss": JWT["auth_jwt_issuer"], "aud": JWT["auth_jwt_audience"],
            "exp": int(time.time()) + 300, "sub": "jules", "roles": ["operator"]}  # fmt: skip
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


async def test_hs256_jwts_carry_the_principal_and_role_from_the_configured_claim(
    db_url: str,
) -> None:
    """The role comes from AUTH_JWT_ROLE_CLAIM; a wrong audience, issuer, secret or an
    expired JWT is a 401, and the principal is recorded as operator."""
    settings = {"auth_mode": "auto", "auth_jwt_secret": SECRET, "auth_jwt_role_claim": "grp", **JWT}
    async with secured_api(db_url, **settings) as api:
        await with_catalog(api)
        good = hs256({"grp": "operator viewer"})
        status, body = await api.call("POST", f"{TASK}/create", json=plan_task(),
                                      headers=bearer(good))  # fmt: skip
        assert status == 200, body
        task_id = int(body["data"]["task_id"])
        assert await history_operators(api, task_id, good) == {"jules"}
        no_role = hs256({"grp": []})
        status, body = await api.call("GET", f"{TASK}/list", headers=bearer(no_role))
        assert status == 403 and "the viewer role" in body["message"], body
        bad = [
            hs256({"aud": "other"}),
            hs256({"iss": "https://evil.example"}),
            hs256({}, secret="t" * 40),
            hs256({"exp": int(time.time()) - 60}),
        ]
        for token in bad:
            status, body = await api.call("GET", f"{TASK}/list", headers=bearer(token))
            assert status == 401, body
        assert "expired" in body["message"]


@pytest.fixture
async def jwks() -> AsyncIterator[tuple[str, Any]]:
    """An identity provider's JWKS endpoint on a loopback port, and its private key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    document = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    async def keys(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/jwks", keys)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/jwks", key
    await runner.cleanup()


async def test_rs256_jwts_are_checked_against_the_jwks_url(
    db_url: str, jwks: tuple[str, Any]
) -> None:
    url, key = jwks
    async with secured_api(db_url, auth_mode="auto", auth_jwt_jwks_url=url, **JWT) as api:
        claims = {"iss": JWT["auth_jwt_issuer"], "aud": JWT["auth_jwt_audience"],
                  "exp": int(time.time()) + 300, "sub": "ingrid", "roles": ["viewer"]}  # fmt: skip
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        status, body = await api.call("GET", f"{TASK}/list", headers=bearer(token))
        assert status == 200, body
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
        status, body = await api.call("GET", f"{TASK}/list", headers=bearer(forged))
        assert status == 401, body


# -- request ids, CORS ----------------------------------------------------------------------


async def test_every_answer_carries_a_request_id(secured: Api) -> None:
    """Generated when absent (on 200, 401 and 404 alike), kept when the caller sends one;
    `test_serve_...` shows it in the server's log lines."""
    alice = await issue(secured.services, "alice", "operator")
    seen = []
    for path, headers in (("/health", {}), (f"{TASK}/list", {}), ("/nowhere", bearer(alice)),
                          ("/health", {"X-Request-ID": "req-42"}),
                          ("/health", {"X-Request-ID": "no spaces\tor tabs"})):  # fmt: skip
        async with secured.session.get(secured.base + path, headers=headers) as r:
            seen.append((r.status, r.headers.get("X-Request-ID", "")))
    assert [s for s, _ in seen] == [200, 401, 404, 200, 200]
    generated = [seen[i][1] for i in (0, 1, 2, 4)]
    assert all(len(rid) == 32 for rid in generated) and len(set(generated)) == 4
    assert seen[3][1] == "req-42"


async def test_cors_allows_only_the_configured_origins(db_url: str, services: Any) -> None:
    preflight = {"Origin": "https://console.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
    async with (
        serve_api(services) as closed,
        closed.session.options(closed.base + f"{TASK}/create", headers=preflight) as r,
    ):
        assert "Access-Control-Allow-Origin" not in r.headers
    async with secured_api(db_url, cors_allow_origins="https://console.example") as api:
        async with api.session.options(api.base + f"{TASK}/create", headers=preflight) as r:
            assert r.status in (200, 204)
            assert r.headers["Access-Control-Allow-Origin"] == "https://console.example"
        other = {**preflight, "Origin": "https://evil.example"}
        async with api.session.options(api.base + f"{TASK}/create", headers=other) as r:
            assert r.headers.get("Access-Control-Allow-Origin") != "https://evil.example"


# -- the secure default ----------------------------------------------------------------------


def test_an_open_api_is_refused_beyond_loopback() -> None:
    """Without authentication the API serves loopback only, unless AUTH_MODE=off says so."""
    for host in ("127.0.0.1", "::1", "localhost"):
        check_exposure(load_settings({"API_HOST": host}))
    with pytest.raises(SettingsError, match="AUTH_MODE=on"):
        check_exposure(load_settings({"API_HOST": "0.0.0.0"}))
    check_exposure(load_settings({"API_HOST": "0.0.0.0", "AUTH_MODE": "off"}))
    check_exposure(load_settings({"API_HOST": "0.0.0.0", "AUTH_MODE": "on"}))
    jwt_env = {"AUTH_JWT_SECRET": SECRET, "AUTH_JWT_ISSUER": "i", "AUTH_JWT_AUDIENCE": "a"}
    check_exposure(load_settings({"API_HOST": "10.0.0.5", **jwt_env}))
    with pytest.raises(SettingsError, match="AUTH_JWT_ISSUER"):
        load_settings({"AUTH_JWT_SECRET": SECRET})


def serve(
    db_url: str, port: int, output: IO[str] | int = subprocess.PIPE, **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "deduction", "serve"],
        env={
            **os.environ,
            "DATABASE_URL": db_url,
            "API_PORT": str(port),
            "TASK_POLL_ENABLED": "false",
            "REDIS_URL": "",
            **env,
        },
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def answer(url: str, data: bytes | None = None, **headers: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_serve_refuses_an_open_public_address_and_says_so_on_loopback(
    db_url: str, tmp_path: Path
) -> None:
    """Beyond loopback with no authentication: exit 2 naming the variables. On loopback: open,
    with a warning in the start-up log; its log lines carry the request's X-Request-ID."""
    refused = serve(db_url, free_port(), API_HOST="0.0.0.0")
    out, _ = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "AUTH_MODE=on" in out and "AUTH_MODE=off" in out
    port = free_port()
    log_file = (tmp_path / "serve.log").open("w")  # a file: a full pipe would block the server
    open_ = serve(db_url, port, log_file, API_HOST="127.0.0.1", LOG_LEVEL="DEBUG")
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                if answer(f"{base}/health")[0] == 200:
                    break
            time.sleep(0.1)
        status, headers = answer(f"{base}{TASK}/create", b"\xff\xfe", **{
            "Content-Type": "application/json", "X-Request-ID": "req-42"})  # fmt: skip
        assert status == 400 and headers["x-request-id"] == "req-42"
    finally:
        open_.terminate()
        open_.wait(30)
        log_file.close()
    out = (tmp_path / "serve.log").read_text()
    lines = out.splitlines()
    assert any("api.open" in line and "AUTH_MODE=on" in line for line in lines), out
    answered = [line for line in lines if "http.answered" in line and "req-42" in line]
    assert answered and '"status": 400' in answered[0], out


def test_tokens_cli_issues_lists_and_revokes(db_url: str) -> None:
    """The token is printed once; the list shows its id, name, roles and state, never it."""
    env = {**os.environ, "DATABASE_URL": db_url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "deduction", "tokens", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    made = run("create", "--name", "alice", "--role", "operator", "--expires", "30d")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    token_id = token.split("_")[1]
    listed = run("list")
    assert token_id in listed.stdout and "alice" in listed.stdout and "active" in listed.stdout
    assert token not in listed.stdout and token.split("_", 2)[2] not in listed.stdout
    assert run("revoke", token_id).returncode == 0
    assert "revoked" in run("list").stdout
    again = run("revoke", token_id)
    assert again.returncode == 1 and "revoked already" in again.stderr
    assert run("create", "--name", "bob", "--role", "boss").returncode == 2
    assert (
        "--expires"
        in run("create", "--name", "bob", "--role", "viewer", "--expires", "soon").stderr
    )


async def test_a_revoked_token_is_refused_at_once(secured: Api) -> None:
    token = await issue(secured.services, "temp", "viewer")
    assert (await secured.call("GET", f"{TASK}/list", headers=bearer(token)))[0] == 200
    await revoke(secured.services, token)
    status, body = await secured.call("GET", f"{TASK}/list", headers=bearer(token))
    assert status == 401 and "revoked" in body["message"]
