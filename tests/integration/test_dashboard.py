"""The live dashboard on a real ``axon serve`` with an API token, in Debian's chromium driven by
Playwright (headless), and its HTTP side (``/dashboard`` files, ``/v1/monitor``) with httpx.

In the browser: the page asks for the token (and says so clearly when a wrong one is refused),
then shows every agent, a worker's restart within seconds of a SIGKILL (new pid, restart count,
the crash in the feed), and an agent restarted with its button; an agent whose start-up error
message is HTML shows that message as text; no console errors. A screenshot is saved to
``test-artifacts/dashboard.png``.

Without chromium the browser test skips with the reason, unless ``CI=true`` (then it fails).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from axon.http.dashboard import MonitorBody

from ..conftest import TEST_SERVER_TOML, ServeAxon
from .browser import chromium

TOKEN = "dashboard-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

# An agent whose factory fails at start-up with HTML in its message; no restarts, so it is
# FAILED at once (and its message reaches the feed as a ``worker.startup_failed`` field).
EVIL_MODULE = f"def make():\n    raise RuntimeError({XSS!r})\n"
EVIL_AGENT = """
[[agents]]
id = "evil"
agent = "evil_agent:make"
[agents.supervisor]
max_restarts = 0
"""
RESOURCE_401 = re.compile(r"^Failed to load resource: .*\b401\b")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as launched:
        yield launched


async def agents_of(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get("/v1/agents")
    assert response.status_code == 200, response.text
    return {a["id"]: a for a in response.json()["agents"]}


async def test_dashboard_in_a_browser(serve_axon: ServeAxon, browser: Any, tmp_path: Path) -> None:
    from playwright.async_api import expect

    (tmp_path / "evil_agent.py").write_text(EVIL_MODULE)
    server = await serve_axon(TEST_SERVER_TOML + EVIL_AGENT, env={"AXON_API_TOKEN": TOKEN})
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: console_errors.append(f"pageerror: {exc}"))

    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as http:
        # --- no token yet: the page asks for one, without a failed request -------------------
        await page.goto(f"{server.url}/dashboard")
        await expect(page.locator("#auth")).to_be_visible()
        await expect(page.locator("#status")).to_have_text("token needed")
        assert console_errors == []

        # --- a wrong token: refused, said clearly; the only errors are the 401 responses -----
        await page.fill("#token-input", "not-the-token-0123456789")
        await page.click("#auth-form button[type=submit]")
        await expect(page.locator("#auth-message")).to_contain_text("refused this token")
        await expect(page.locator("#auth")).to_be_visible()
        assert console_errors, "chromium reports the refused request"
        assert all(RESOURCE_401.match(text) for text in console_errors), console_errors
        console_errors.clear()

        # --- the right token: every agent ----------------------------------------------------
        await page.fill("#token-input", TOKEN)
        await page.click("#auth-form button[type=submit]")
        await expect(page.locator("#auth")).to_be_hidden()
        await expect(page.locator("#status")).to_have_text("live")
        agents = await agents_of(http)
        assert sorted(agents) == ["evil", "misbehaving", "python_agent_1", "python_agent_2"]
        for agent_id, agent in agents.items():
            block = page.locator(f'tbody[data-agent="{agent_id}"]')
            await expect(block.locator("tr.agent td.name")).to_have_text(agent_id)
            await expect(block.locator("tr.agent td.state")).to_have_text(agent["state"])
            await expect(block.locator("tr.worker")).to_have_count(len(agent["workers"]))
        assert agents["evil"]["state"] == "failed"
        await expect(page.locator("#agent-count")).to_have_text("(4 agents)")
        await expect(page.locator(".uplot")).to_have_count(4)

        # --- event fields are data: the HTML in the start-up error is shown as text ----------
        failure = page.locator('#feed li[data-event="worker.startup_failed"]')
        await expect(failure).to_have_count(1)
        await expect(failure.locator(".fields")).to_contain_text(XSS)
        assert await page.evaluate("window.__xss") is None
        assert await page.locator("#feed img, #feed script").count() == 0

        # --- runs show in the figures --------------------------------------------------------
        for prompt in ("one", "two", "three"):
            reply = await http.post("/v1/agents/misbehaving/messages", json={"prompt": prompt})
            assert reply.status_code == 200, reply.text
        failed = await http.post("/v1/agents/misbehaving/messages", json={"prompt": "raise:no"})
        assert failed.status_code == 502
        await expect(page.locator("#total-requests")).to_have_text("4")
        await expect(page.locator("#total-errors")).to_have_text("1")

        # --- SIGKILL a worker: the page shows its replacement within seconds -----------------
        worker = page.locator('tbody[data-agent="python_agent_1"] tr.worker[data-worker="0"]')
        pid_text = await worker.locator("td.pid").inner_text()
        pid = int(pid_text)
        assert pid == agents["python_agent_1"]["workers"][0]["pid"]
        await expect(worker.locator("td.restarts")).to_have_text("0")
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        crash = page.locator(
            '#feed li[data-event="worker.exit"]', has_text=re.compile(rf"\bpid={pid}\b")
        )
        await expect(crash).to_have_count(1, timeout=10_000)
        await expect(crash.locator(".fields")).to_contain_text("signal=9")
        await expect(worker.locator("td.restarts")).to_have_text("1", timeout=10_000)
        await expect(worker.locator("td.pid")).not_to_have_text(pid_text, timeout=10_000)
        await expect(worker.locator("td.state")).to_have_text("running", timeout=10_000)
        seen_after = time.monotonic() - killed_at
        assert seen_after < 10.0
        new_pid = int(await worker.locator("td.pid").inner_text())
        assert new_pid == (await agents_of(http))["python_agent_1"]["workers"][0]["pid"]
        await expect(worker.locator("td.exit")).to_contain_text("signal SIGKILL (crashed)")
        await expect(page.locator("#feed li").first).to_have_attribute(
            "data-event", re.compile(r"^(agent\.state|agent\.restart|worker\.exit)$")
        )

        # --- forget the token and give it again: the feed starts over, nothing twice ---------
        await page.click("#forget-token")
        await expect(page.locator("#auth")).to_be_visible()
        await page.fill("#token-input", TOKEN)
        await page.click("#auth-form button[type=submit]")
        await expect(page.locator("#status")).to_have_text("live")
        await expect(failure).to_have_count(1)
        await expect(crash).to_have_count(1)
        seqs = await page.locator("#feed li").evaluate_all("items => items.map(i => i.dataset.seq)")
        assert len(seqs) == len(set(seqs))
        assert [int(s) for s in seqs] == sorted((int(s) for s in seqs), reverse=True)

        # --- the restart button --------------------------------------------------------------
        block = page.locator('tbody[data-agent="python_agent_2"]')
        before = int(await block.locator('tr.worker[data-worker="0"] td.pid').inner_text())
        await block.locator("button.restart").click()
        outcome = block.locator(".outcome")
        await expect(outcome).to_have_text("restarted: running", timeout=30_000)
        after = (await agents_of(http))["python_agent_2"]["workers"][0]["pid"]
        assert after != before
        await expect(block.locator('tr.worker[data-worker="0"] td.pid')).to_have_text(str(after))
        await expect(block.locator("tr.agent td.state")).to_have_text("running")

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    await page.close()
    assert console_errors == []


async def test_page_files_and_monitor_api(serve_axon: ServeAxon) -> None:
    server = await serve_axon(TEST_SERVER_TOML, env={"AXON_API_TOKEN": TOKEN})
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as anonymous:
        # --- the page and its files need no token; they are what the package ships -----------
        page = await anonymous.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "script-src 'self';" in page.headers["content-security-policy"]
        assert '<meta name="axon-auth" content="token">' in page.text
        assert "{{" not in page.text
        again = await anonymous.get("/dashboard", headers={"if-none-match": page.headers["etag"]})
        assert again.status_code == 304
        assert (await anonymous.get("/dashboard/", follow_redirects=True)).text == page.text

        assets = re.findall(r'(?:src|href)="(dashboard/[^"?]+)\?v=([0-9a-f]{8})"', page.text)
        assert {name for name, _ in assets} == {
            "dashboard/uPlot.min.css",
            "dashboard/dashboard.css",
            "dashboard/uPlot.iife.min.js",
            "dashboard/app.js",
        }
        shipped = resources.files("axon.http").joinpath("dashboard_assets")
        for name, version in assets:
            served = await anonymous.get(f"/{name}", params={"v": version})
            assert served.status_code == 200, name
            body = shipped.joinpath(name.removeprefix("dashboard/")).read_bytes()
            assert served.content == body
            assert hashlib.sha256(body).hexdigest().startswith(version)
            assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert served.headers["x-content-type-options"] == "nosniff"
            unversioned = await anonymous.get(f"/{name}")
            assert unversioned.headers["cache-control"] == "no-cache"
        licence = await anonymous.get("/dashboard/uPlot.LICENSE.txt")
        assert licence.status_code == 200
        assert "MIT License" in licence.text

        # --- nothing else is reachable through the open prefix -------------------------------
        for path in (
            "/dashboard/index.html",
            "/dashboard/nope.js",
            "/dashboard/..%2Fv1%2Fagents",
            "/dashboard/%2E%2E/v1/agents",
        ):
            refused = await anonymous.get(path)
            assert refused.status_code in (401, 404), (path, refused.status_code)
            assert refused.json()["error"]["type"] in ("not_found", "unauthorized"), path
            assert "python_agent_1" not in refused.text

        # --- /v1/monitor is the API: the token is required ------------------------------------
        denied = await anonymous.get("/v1/monitor")
        assert denied.status_code == 401
        assert denied.json()["error"]["type"] == "unauthorized"

    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as http:
        for bad in ("-1", "abc", "1.5"):
            invalid = await http.get("/v1/monitor", params={"since": bad})
            assert invalid.status_code == 422, bad
            assert invalid.json()["error"]["type"] == "invalid_request"
            assert invalid.json()["error"]["field"] == "since"

        reply = await http.post("/v1/agents/misbehaving/messages", json={"prompt": "hello"})
        assert reply.status_code == 200
        crashed = await http.post("/v1/agents/misbehaving/messages", json={"prompt": "crash"})
        assert crashed.status_code == 502

        def settled(body: dict[str, Any]) -> bool:
            """The crashed agent is back: it went to ``restarting``, and then to ``running``."""
            changes = [
                e["fields"]["state"]
                for e in body["events"]
                if e["event"] == "agent.state" and e["fields"]["agent"] == "misbehaving"
            ]
            return "restarting" in changes and changes[-1] == "running"

        async with asyncio.timeout(30):  # polling the route under test: it has no event to wait on
            while True:
                first = await http.get("/v1/monitor")
                if settled(first.json()):
                    break
                await asyncio.sleep(0.02)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "no-store"
        snapshot = MonitorBody.model_validate(first.json())  # the documented model, exactly
        assert snapshot.totals.requests == 2
        assert snapshot.totals.outcomes == {"ok": 1, "agent_crashed": 1}
        assert snapshot.totals.crashes == 1
        exits = [e for e in snapshot.events if e.event == "worker.exit"]
        assert [e.fields["cause"] for e in exits] == ["crashed"]
        assert exits[0].fields["exit_code"] == 13
        agents = (await http.get("/v1/agents")).json()["agents"]
        assert [a.id for a in snapshot.agents] == [a["id"] for a in agents]

        # The cursor: nothing new, then only what happened since.
        cursor = snapshot.last_seq
        assert cursor >= 1
        quiet = (await http.get("/v1/monitor", params={"since": cursor})).json()
        assert quiet["events"] == []
        assert quiet["last_seq"] == cursor
        restarted = await http.post("/v1/agents/python_agent_2/restart")
        assert restarted.status_code == 200
        later = (await http.get("/v1/monitor", params={"since": cursor})).json()
        assert later["events"], "a manual restart changes the agent's state"
        assert all(e["seq"] > cursor for e in later["events"])
        mine = [e for e in later["events"] if e["fields"]["agent"] == "python_agent_2"]
        assert mine == later["events"], "the crashed agent had settled before the cursor"
        assert {e["event"] for e in mine} == {"agent.state"}
        assert mine[-1]["fields"]["state"] == "running"

        doc = (await http.get("/openapi.json")).json()
        operation = doc["paths"]["/v1/monitor"]["get"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/MonitorBody"
        }
        assert {"401", "422"} <= set(operation["responses"])
        assert not [p for p in doc["paths"] if p.startswith("/dashboard")]


async def test_page_without_a_token_does_not_ask_for_one() -> None:
    """An API without a token: the page says so, and goes straight to polling."""
    from axon import AgentSpec, Axon
    from axon.http.app import create_app
    from axon.store.memory import InMemoryStore

    axon = Axon(
        [AgentSpec(id="a", agent="axon.examples.weather:weather_agent")], store=InMemoryStore()
    )
    app = create_app(axon, token=None)  # the page needs no running runtime
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        page = await client.get("/dashboard")
    assert page.status_code == 200
    assert '<meta name="axon-auth" content="none">' in page.text
