"""Browser tests: real headless Chromium (Debian's) driven by Playwright's sync API, against
the whole app (API + web) on a real HTTP server over 127.0.0.1, with real agent processes."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, Playwright, expect, sync_playwright

from tests.support.processes import AgentProcess, wait_for
from tests.support.server import serve_in_thread
from voipcloud.api.app import create_app
from voipcloud.config import Settings
from voipcloud.domain.model import Node
from voipcloud.services.context import admin_actor
from voipcloud.services.controller import Controller

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_PASSWORD = "browser-admin-password"
ADMIN = admin_actor("admin")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "tests-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)")
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@dataclass
class Site:
    """The running controller: its URL, its services (to set up a scene) and its agents."""

    url: str
    controller: Controller
    tmp_path: Path
    agents: list[AgentProcess]

    def add_node(
        self, hostname: str, *, roles: tuple[str, ...] = (), public_ip: str | None = None
    ) -> Node:
        number = len(self.controller.nodes.list(_all()).items) + 10
        node = self.controller.nodes.add(
            actor=ADMIN, hostname=hostname, private_ip=f"10.0.0.{number}", public_ip=public_ip
        )
        for role in roles:
            self.controller.roles.assign(node.id, actor=ADMIN, role=role, parameters={})
        return self.node(node.id)

    def node(self, node_id: int) -> Node:
        return self.controller.nodes.get(node_id).node

    def session_key(self, node_id: int) -> str:
        key = self.controller.nodes.get(node_id).session_key
        assert key
        return key

    def start_agent(self, node_id: int, *, config: str = "") -> AgentProcess:
        agent = AgentProcess(
            controller_url=self.url,
            session_key=self.session_key(node_id),
            state_dir=self.tmp_path / f"agent-{node_id}-{len(self.agents)}",
            config=config,
        ).start()
        self.agents.append(agent)
        return agent

    def wait_status(self, node_id: int, status: str, timeout: float = 20) -> Node:
        return wait_for(
            lambda: (
                (n := self.node(node_id)).status.value == status and not n.pending_operation and n
            ),
            timeout=timeout,
            what=f"node {node_id} to settle in {status}",
        )


def _all() -> Any:
    from voipcloud.domain.filters import NodeFilter

    return NodeFilter(limit=500)


@pytest.fixture
def site(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[Site]:
    """The controller; settings can be changed per test with
    `@pytest.mark.parametrize("site", [{"activation_timeout": 2}], indirect=True)`."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    (tmp_path / "data").mkdir()
    shutil.copy(sqlite_template, tmp_path / "data" / "voipcloud.sqlite3")  # already migrated
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path / "data",
            "admin_password": ADMIN_PASSWORD,
            "heartbeat_interval": 0.5,
            "missed_beats": 3,
            "activation_timeout": 20,
            **overrides,
        }
    )
    app = create_app(settings)
    agents: list[AgentProcess] = []
    with serve_in_thread(app) as url:
        try:
            yield Site(url=url, controller=app.state.controller, tmp_path=tmp_path, agents=agents)
        finally:
            for agent in agents:
                agent.stop()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, base_url=site.url)
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, password: str = ADMIN_PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


@pytest.fixture
def admin_page(page: Page) -> Page:
    sign_in(page)
    assert page.get_by_role("heading", name="Cloud Management").is_visible()
    return page


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


ENABLED = ":not([aria-disabled=true])"
DISABLED = "[aria-disabled=true]"
ALL_ROW_ACTIONS = frozenset(
    {
        "assign-role",
        "edit",
        "standby",
        "activate",
        "deactivate",
        "force-deactivate",
        "mark-damaged",
        "fix",
        "delete",
    }
)
"""Every row action the listing shows for every node (besides View Info): allowed ones as
buttons, refused ones disabled with the rulebook's reason -- never hidden."""


def open_actions(page: Page, node_id: int) -> Locator:
    """The node's row with its Actions menu opened afresh: the listing loads a row's actions
    when its menu opens (a menu left open is closed and opened again, so that what it shows
    was decided now, not before the last live update). A page a form's post has just brought
    may be shown before its scripts ran (they are deferred): a click on the button then does
    nothing, so this first waits for the page to finish loading."""
    page.wait_for_load_state()
    toggle = page.locator(f"#n{node_id}-menu")
    menu = page.locator(f"#n{node_id}-actions")
    if toggle.get_attribute("aria-expanded") == "true":
        toggle.click()
        expect(menu).to_be_hidden()
    toggle.click()
    expect(menu.locator("[data-action]").first).to_be_visible()
    expect(menu).not_to_have_attribute("aria-busy", "true")
    return page.locator(f"#node-{node_id}")


def row_actions(page: Page, node_id: int) -> set[str]:
    """The data-action of every action button or link in the node's row that can be used
    (the disabled ones, shown with their reason, are in `disabled_actions`), its menu open."""
    row = open_actions(page, node_id)
    return set(
        row.locator(f"[data-action]{ENABLED}").evaluate_all("els => els.map(e => e.dataset.action)")
    )


def disabled_actions(page: Page, node_id: int) -> dict[str, str]:
    """The row's disabled actions: data-action -> the reason shown (its title), its menu
    open."""
    row = open_actions(page, node_id)
    pairs = row.locator(f"[data-action]{DISABLED}").evaluate_all(
        "els => els.map(e => [e.dataset.action, e.getAttribute('title') || ''])"
    )
    return dict(pairs)


def role_actions(page: Page, node_id: int, *, disabled: bool = False) -> dict[str, set[str]]:
    """Per role of the node: the role actions that can be used (or, with `disabled`, the
    ones shown disabled with their reason)."""
    which = DISABLED if disabled else ENABLED
    found: dict[str, set[str]] = {}
    for item in page.locator(f"#node-{node_id} li[data-role]").all():
        code = item.get_attribute("data-role") or ""
        found[code] = set(
            item.locator(f"[data-role-action]{which}").evaluate_all(
                "els => els.map(e => e.dataset.roleAction)"
            )
        )
    return found


StartAgent = Callable[..., AgentProcess]
