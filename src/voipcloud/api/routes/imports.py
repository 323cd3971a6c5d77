"""Enrolling many nodes in one call: `POST /nodes/import` (domain/imports.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from voipcloud.api.deps import CanManageNodes, CanRead, ControllerDep
from voipcloud.api.enrolment import for_request
from voipcloud.api.errors import REFUSALS, refuses_only
from voipcloud.api.row_schemas import ImportResultPublic, ImportResultsPublic, row_results
from voipcloud.api.schemas import Strict
from voipcloud.domain import imports
from voipcloud.domain.imports import ImportRow, RoleRequest
from voipcloud.domain.roles import ROLES

router = APIRouter(prefix="/nodes", tags=["nodes"], responses=REFUSALS)

# Each row's values are checked by the services, row by row (a refused row is answered in the
# results, the others are created): the schema bounds only the request's size and shape, so a
# row with an unknown role or a bad hostname is a refused row, not a refused request.
_ROLE_HELP = "a role code (GET /roles): " + ", ".join(ROLES)


class ImportRole(Strict):
    """A role with parameters, as Assign Role takes it."""

    role: str = Field(max_length=64, description=_ROLE_HELP, examples=["sip"])
    parameters: dict[str, Any] = Field(default_factory=dict, max_length=64)


class ImportNode(Strict):
    """The fields of Add Node, and the roles to assign (a code, or a code with parameters)."""

    hostname: str = Field(max_length=1024, examples=["sip-01.example.com"])
    private_ip: str = Field(max_length=256, examples=["10.0.0.11"])
    public_ip: str | None = Field(default=None, max_length=256)
    container_id: str | None = Field(default=None, max_length=1024)
    roles: list[Annotated[str, Field(max_length=64)] | ImportRole] = Field(
        default_factory=list,
        max_length=imports.MAX_ROLES_PER_ROW,
        description=f"the roles to assign, in order: each {_ROLE_HELP}, or a role with parameters",
    )

    def row(self) -> ImportRow:
        return ImportRow(
            hostname=self.hostname,
            private_ip=self.private_ip,
            public_ip=self.public_ip,
            container_id=self.container_id,
            roles=tuple(
                RoleRequest(role=r) if isinstance(r, str) else RoleRequest(r.role, r.parameters)
                for r in self.roles
            ),
        )


class ImportBody(Strict):
    nodes: list[ImportNode] = Field(min_length=1, max_length=imports.MAX_IMPORT)


@router.post("/import", response_model=ImportResultsPublic)
def import_nodes(
    body: ImportBody, actor: CanManageNodes, controller: ControllerDep, request: Request
) -> ImportResultsPublic:
    """Add up to 5000 nodes, each with its roles: every row is checked by the rules of Add
    Node and Assign Role; one result per row, in order: `created` (with its NodeID and
    session key) or `refused` (with the `field` and/or `rule` and the `reason`; nothing of
    that row is created). The rows that pass are created even when others are refused; a
    hostname given twice is created once, the later rows refused by `hostname-unique`."""
    results = controller.imports.run([n.row() for n in body.nodes], actor=actor)
    created, refused = imports.summary(results)
    return ImportResultsPublic(
        created=created,
        refused=refused,
        results=row_results(ImportResultPublic, results),
        enrolment=for_request(request),
    )


@router.api_route("/import", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@refuses_only
def import_only_posts(_reader: CanRead) -> JSONResponse:
    """405: /nodes/import is not a node (without this, /nodes/{node_id} would answer 422)."""
    return JSONResponse(
        {"detail": "Method Not Allowed; this path answers POST"},
        status_code=405,
        headers={"Allow": "POST"},
    )
