"""The namespace labs of the suite (tests/support/netns.py) never share an address range: the
pytest workers of a run open labs at the same time, and two bridges on one 10.200.<net>.0/24
made the host reach only one of them (CI 2026-12-01: a controller in the other lab never
answered its health check). Here two labs ask for the same range at once, each gets its own,
and the host and each lab's namespace reach each other."""

from __future__ import annotations

import secrets
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support.netns import Lab, Namespace, netns_unavailable, nets_in_use
from tests.support.tls_netns import TlsLab

pytestmark = pytest.mark.e2e


@pytest.fixture
def labs() -> Iterator[ExitStack]:
    why = netns_unavailable()
    if why:
        pytest.skip(f"NETWORK NAMESPACES UNAVAILABLE: {why}")
    with ExitStack() as stack:
        yield stack


def opened(stack: ExitStack, lab: Lab) -> Lab:
    stack.callback(lab.close)
    return lab.open()


def reaches_the_host(lab: Lab, ns: Namespace) -> bool:
    """A TCP connection from the namespace to the lab's bridge address (the answer must be
    routed back to this lab's bridge)."""
    with socket.create_server((lab.host_address, 0)) as server:
        port = server.getsockname()[1]
        probe = f"import socket; socket.create_connection(({lab.host_address!r}, {port}), 5)"
        return ns.run([sys.executable, "-c", probe], timeout=20).returncode == 0


def test_two_labs_asking_for_one_range_get_two_and_each_is_reachable(labs: ExitStack) -> None:
    wanted = secrets.choice([n for n in range(100, 250) if n not in nets_in_use()])
    first = opened(labs, Lab(net=wanted))
    second = opened(labs, Lab(net=wanted))
    assert first.net == wanted
    assert second.net != wanted
    assert {first.net, second.net} <= nets_in_use()
    for lab in (first, second):
        ns = lab.add()
        assert ns.address.startswith(f"10.200.{lab.net}.")
        assert reaches_the_host(lab, ns), lab


def test_a_lab_with_a_fixed_range_moves_when_it_is_held(labs: ExitStack) -> None:
    held = TlsLab().net  # 77, the TLS tests' range
    holder = opened(labs, Lab(net=held)) if held not in nets_in_use() else None
    tls = opened(labs, TlsLab())
    assert tls.net != held
    assert holder is None or holder.net == held
    ns = tls.add()
    assert reaches_the_host(tls, ns)
