"""Text the web pages hand straight to the services is checked there too (not only by the API
schemas): NUL and control characters are refused naming the field, and nothing is stored."""

from __future__ import annotations

import pytest

from voipcloud.domain.errors import InvalidInput
from voipcloud.domain.filters import NodeFilter
from voipcloud.services.controller import Controller

ADMIN = "admin:admin"


@pytest.fixture
def controller(services: Controller) -> Controller:
    return services


def test_container_id_with_nul_is_refused_and_nothing_is_added(controller: Controller) -> None:
    before = controller.nodes.list(NodeFilter()).total
    with pytest.raises(InvalidInput) as refused:
        controller.nodes.add(
            hostname="edge-01", private_ip="10.0.0.5", container_id="ab\x00cd", actor=ADMIN
        )
    assert [e.loc[-1] for e in refused.value.errors] == ["container_id"]
    assert controller.nodes.list(NodeFilter()).total == before


def test_reason_with_nul_is_refused_and_the_status_stays(controller: Controller) -> None:
    node = controller.nodes.add(hostname="edge-02", private_ip="10.0.0.6", actor=ADMIN)
    with pytest.raises(InvalidInput) as refused:
        controller.nodes.action(node.id, "standby", actor=ADMIN, reason="because\x00")
    assert [e.loc[-1] for e in refused.value.errors] == ["reason"]
    assert controller.nodes.get(node.id).node.status == node.status
    kept = controller.nodes.action(node.id, "standby", actor=ADMIN, reason="line one\nline two")
    assert kept.status == "StandBy"
