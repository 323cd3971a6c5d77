"""The services of one controller, wired together once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from voipcloud.domain.model import Node
from voipcloud.services.agents import AgentService
from voipcloud.services.auth import AuthService
from voipcloud.services.bootstrap import ensure_controller_node
from voipcloud.services.bulk import BulkService
from voipcloud.services.context import Context
from voipcloud.services.extensions import ExtensionService
from voipcloud.services.imports import ImportService
from voipcloud.services.infrastructure import InfrastructureService
from voipcloud.services.maintenance import MaintenanceService
from voipcloud.services.nodes import NodeService
from voipcloud.services.operations import OperationService
from voipcloud.services.presence import Connectivity, Presence
from voipcloud.services.roles import RoleService
from voipcloud.services.rollout_runner import RolloutRunner
from voipcloud.services.rollouts import RolloutService
from voipcloud.services.storage import StorageService


@dataclass(slots=True)
class Controller:
    ctx: Context
    nodes: NodeService
    roles: RoleService
    extensions: ExtensionService
    operations: OperationService
    auth: AuthService
    agents: AgentService
    infrastructure: InfrastructureService
    storage: StorageService
    rollouts: RolloutService
    rollout_runner: RolloutRunner
    maintenance: MaintenanceService
    bulk: BulkService
    imports: ImportService

    @classmethod
    def build(cls, ctx: Context) -> Controller:
        nodes = NodeService(ctx)
        roles = RoleService(ctx, nodes)
        operations = OperationService(ctx)
        rollouts = RolloutService(ctx)
        runner = RolloutRunner(ctx)
        rollouts.on_created.append(runner.wake)
        presence = Presence(
            heartbeat_interval=ctx.heartbeat_interval, missed_beats=ctx.missed_beats
        )
        return cls(
            ctx=ctx,
            nodes=nodes,
            roles=roles,
            extensions=ExtensionService(ctx),
            operations=operations,
            auth=AuthService(ctx),
            agents=AgentService(ctx, roles=roles, operations=operations, presence=presence),
            infrastructure=InfrastructureService(ctx, nodes=nodes, roles=roles),
            storage=StorageService(ctx),
            rollouts=rollouts,
            rollout_runner=runner,
            maintenance=MaintenanceService(ctx),
            bulk=BulkService(ctx, nodes=nodes, roles=roles),
            imports=ImportService(ctx, nodes=nodes, roles=roles),
        )

    def connectivity(self, node: Node) -> tuple[Connectivity, datetime | None]:
        return self.agents.presence.state(node.id, node.last_seen, self.ctx.clock())

    def bootstrap(self, *, admin_password: str | None) -> str | None:
        """Create what a first start needs; returns a generated admin password, if any."""
        ensure_controller_node(self.ctx, self.nodes)
        return self.auth.ensure_admin(admin_password)
