"""Infrastructure Properties and the Configuration Wizard (SPEC.md sections 5 and 7)."""

from __future__ import annotations

from voipcloud.services.context import Context
from voipcloud.services.nodes import NodeService
from voipcloud.services.roles import RoleService


class InfrastructureService:
    def __init__(self, ctx: Context, *, nodes: NodeService, roles: RoleService) -> None:
        self.ctx = ctx
        self.nodes = nodes
        self.roles = roles
