"""Helpers for the Infrastructure Properties and wizard API tests.

Online needs a node's agent to report a successful activation. These tests keep the app's
controller and report through `controller.operations.report`, the same service call the agent
endpoint makes (the end-to-end tests use real agents).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import login, make_settings
from tests.support.server import serve_in_thread
from voipcloud.api.app import create_app
from voipcloud.services.controller import Controller

API = "/api/v1"


@dataclass
class Infra:
    client: httpx.Client
    controller: Controller

    def add_node(
        self, hostname: str, *, role: str, parameters: dict[str, Any] | None = None
    ) -> int:
        answer = self.client.post(
            f"{API}/nodes",
            json={"hostname": hostname, "private_ip": "10.0.0.10", "public_ip": "203.0.113.9"},
        )
        assert answer.status_code == 201, answer.text
        node_id: int = answer.json()["node_id"]
        assigned = self.client.post(
            f"{API}/nodes/{node_id}/roles", json={"role": role, "parameters": parameters or {}}
        )
        assert assigned.status_code == 201, assigned.text
        return node_id

    def report(self, node_id: int, *, success: bool = True, reason: str | None = None) -> None:
        pending = self.node(node_id)["pending_operation"]
        assert pending, f"node {node_id} has no pending operation"
        self.controller.operations.report(
            node_id, operation_id=pending["operation_id"], success=success, reason=reason
        )

    def bring_online(self, node_id: int) -> None:
        answer = self.client.post(f"{API}/nodes/{node_id}/actions/activate")
        assert answer.status_code == 200, answer.text
        self.report(node_id)
        assert self.node(node_id)["status"] == "Online"

    def node(self, node_id: int) -> dict[str, Any]:
        answer = self.client.get(f"{API}/nodes/{node_id}")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def parameters(self, node_id: int, role: str) -> dict[str, Any]:
        for assignment in self.node(node_id)["assignments"]:
            if assignment["role"] == role:
                params: dict[str, Any] = assignment["parameters"]
                return params
        raise AssertionError(f"node {node_id} has no role {role}")

    def events(self, node_id: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.get(f"{API}/nodes/{node_id}/events").json()[
            "items"
        ]
        return items

    def controller_id(self) -> int:
        items = self.client.get(f"{API}/nodes").json()["items"]
        return int(next(n["node_id"] for n in items if n["is_controller"]))


@contextmanager
def running_infra(tmp_path: Path, database_url: str) -> Iterator[Infra]:
    """The app on a real HTTP server, with its controller at hand (use in a fixture)."""
    settings = make_settings(tmp_path, database_url)
    app = create_app(settings)
    with serve_in_thread(app) as base_url:
        client = login(base_url)
        try:
            yield Infra(client=client, controller=app.state.controller)
        finally:
            client.close()
