"""Activate → Online with a real Kamailio: a SIP node in a network namespace (root only).

    .venv/bin/python -m bench.role_software_latency [cycles]

Each cycle: Activate, wait for Online (the agent renders kamailio.cfg, starts Kamailio and
Online is reported only after its OPTIONS ping and kamcmd answered), then Deactivate
(Kamailio stopped), wait for Deactivated. Prints the latencies measured by the client.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.test_role_software_sip import SOFTWARE, add_node
from tests.support.netns import BridgeController, Lab, NamespacedAgent, netns_unavailable
from tests.support.processes import node, wait_for, wait_status


def main(cycles: int) -> None:
    why = netns_unavailable()
    if why:
        raise SystemExit(f"network namespaces unavailable: {why}")
    lab = Lab().open()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        controller = BridgeController(data_dir=base / "c", host=lab.host_address).start()
        agent = None
        try:
            admin = controller.admin()
            ns = lab.add()
            node_id, key = add_node(admin, "bench-sip", ns.address, ["sip"])
            agent = NamespacedAgent(
                controller_url=controller.url,
                session_key=key,
                state_dir=base / "agent",
                config=SOFTWARE,
                namespace=ns,
            ).start()
            wait_for(lambda: node(admin, node_id)["connectivity"] == "connected", what="agent")
            online, offline = [], []
            for _ in range(cycles):
                started = time.monotonic()
                admin.post(f"/api/v1/nodes/{node_id}/actions/activate").raise_for_status()
                wait_status(admin, node_id, "Online", timeout=60)
                online.append(time.monotonic() - started)
                started = time.monotonic()
                admin.post(f"/api/v1/nodes/{node_id}/actions/deactivate").raise_for_status()
                wait_status(admin, node_id, "Deactivated", timeout=60)
                offline.append(time.monotonic() - started)
            for name, values in (("Activate → Online", online), ("Deactivate", offline)):
                ms = sorted(v * 1000 for v in values)
                print(
                    f"{name}: n={len(ms)} min {ms[0]:.0f} ms, median "
                    f"{statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms"
                )
        finally:
            if agent is not None:
                agent.stop()
            controller.stop()
            lab.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
