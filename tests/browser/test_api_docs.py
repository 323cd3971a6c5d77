"""`/docs` and `/redoc` render with the network cut: every asset is the controller's own.

The page's requests are routed through the test: anything not addressed to the controller is
aborted and remembered, so a CDN reference would leave a blank page and fail the test.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import Site, screenshot


def _cut_the_network(page: Page, site: Site) -> list[str]:
    ours = urlsplit(site.url).netloc
    refused: list[str] = []

    def only_the_controller(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == ours or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    page.context.route("**/*", only_the_controller)
    return refused


def test_swagger_ui_renders_every_operation_offline(page: Page, site: Site) -> None:
    refused = _cut_the_network(page, site)
    page.goto("/docs")
    # Swagger UI draws one block per operation once its bundle ran and the schema loaded
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("voipcloud", timeout=30_000)
    expect(page.locator("#operations-nodes-list_nodes")).to_be_visible()
    expect(page.locator("#operations-nodes-add_node")).to_be_visible()
    assert page.locator(".opblock").count() > 40
    screenshot(page, "api-docs-swagger", full_page=False)
    assert refused == []


def test_redoc_renders_offline(page: Page, site: Site) -> None:
    refused = _cut_the_network(page, site)
    page.goto("/redoc")
    # ReDoc parses the whole schema (over a hundred operations) before it draws anything:
    # seconds on a loaded 2-core machine, so it gets more than the default 5 s
    expect(page.locator("h1").first).to_contain_text("voipcloud", timeout=30_000)
    # ReDoc lists the operations by summary in its menu; the Problem schema is documented
    expect(page.get_by_text("Problem").first).to_be_attached()
    assert page.locator("[data-role='search:results'], .menu-content li").count() > 40
    screenshot(page, "api-docs-redoc", full_page=False)
    assert refused == []
