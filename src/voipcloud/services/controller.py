"""The services of one controller, wired together once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from voipcloud.services.auth import AuthService
from voipcloud.services.bootstrap import ensure_controller_node
from voipcloud.services.context import Context
from voipcloud.services.extensions import ExtensionService
from voipcloud.services.nodes import NodeService
from voipcloud.services.operations import OperationService
from voipcloud.services.roles import RoleService


@dataclass(slots=True)
class Controller:
    ctx: Context
    nodes: NodeService
    roles: RoleService
    extensions: ExtensionService
    operations: OperationService
    auth: AuthService

    @classmethod
    def build(cls, ctx: Context) -> Controller:
        nodes = NodeService(ctx)
        return cls(
            ctx=ctx,
            nodes=nodes,
            roles=RoleService(ctx, nodes),
            extensions=ExtensionService(ctx),
            operations=OperationService(ctx),
            auth=AuthService(ctx),
        )

    def bootstrap(self, *, admin_password: str | None) -> str | None:
        """Create what a first start needs; returns a generated admin password, if any."""
        ensure_controller_node(self.ctx, self.nodes)
        return self.auth.ensure_admin(admin_password)
