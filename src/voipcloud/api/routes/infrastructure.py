"""REST routes: Infrastructure Properties and the Configuration Wizard."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Response

from voipcloud.api.deps import CanManageInfrastructure, CanRead, ControllerDep
from voipcloud.api.errors import REFUSALS
from voipcloud.api.infrastructure_schemas import (
    ControllerNodePublic,
    NodeImpactPublic,
    PropertiesChangePublic,
    PropertiesPublic,
    PropertiesUpdate,
    PropertySchemaPublic,
    RoleParameterRef,
    WizardDetectedPublic,
    WizardPlanPublic,
    WizardRequest,
    WizardRunPublic,
)
from voipcloud.api.versions import STALE_RESPONSE, IfMatch, set_etag
from voipcloud.domain.properties import PROPERTIES
from voipcloud.domain.roles import SINGLE_NODE_ROLES
from voipcloud.domain.wizard import WizardPlan
from voipcloud.services.controller import Controller
from voipcloud.services.infrastructure import PropertiesChange

router = APIRouter(prefix="/infrastructure", tags=["infrastructure"], responses=REFUSALS)


def _properties(controller: Controller) -> PropertiesPublic:
    service = controller.infrastructure
    return PropertiesPublic(**service.properties(), updated_at=service.updated_at())


def _change(result: PropertiesChange) -> PropertiesChangePublic:
    return PropertiesChangePublic(
        applied=result.applied,
        changed=result.changed,
        affected=[NodeImpactPublic.model_validate(asdict(i)) for i in result.affected],
        others=[NodeImpactPublic.model_validate(asdict(i)) for i in result.others],
        properties=PropertiesPublic(**result.properties),
    )


def _plan(plan: WizardPlan) -> WizardPlanPublic:
    return WizardPlanPublic.model_validate({**asdict(plan), "new_roles": plan.new_roles})


@router.get("/properties", response_model=PropertiesPublic)
def get_properties(
    _reader: CanRead, controller: ControllerDep, response: Response
) -> PropertiesPublic:
    """The Infrastructure Properties (passwords masked: they are write-only). `ETag`: their
    version, for `If-Match`."""
    set_etag(response, controller.infrastructure.version())
    return _properties(controller)


@router.put("/properties", response_model=PropertiesChangePublic, responses=STALE_RESPONSE)
def put_properties(
    body: PropertiesUpdate,
    admin: CanManageInfrastructure,
    controller: ControllerDep,
    expected: IfMatch,
    response: Response,
    dry_run: Annotated[bool, Query()] = False,
) -> PropertiesChangePublic:
    """Change properties; Online nodes whose configuration moves are marked Damaged. With
    `If-Match`: only if the properties are still at that version (412 otherwise)."""
    result = controller.infrastructure.update(
        actor=admin,
        changes=body.model_dump(exclude_unset=True),
        dry_run=dry_run,
        expected=expected,
    )
    set_etag(response, controller.infrastructure.version())
    return _change(result)


@router.post("/properties/preview", response_model=PropertiesChangePublic)
def preview_properties(
    body: PropertiesUpdate, admin: CanManageInfrastructure, controller: ControllerDep
) -> PropertiesChangePublic:
    """What saving these properties would do (which nodes it marks Damaged); saves nothing."""
    result = controller.infrastructure.update(
        actor=admin, changes=body.model_dump(exclude_unset=True), dry_run=True
    )
    return _change(result)


@router.get("/properties/schema", response_model=list[PropertySchemaPublic])
def properties_schema(_reader: CanRead) -> list[PropertySchemaPublic]:
    """Each property: label, type, whether it is secret, and the role parameters it feeds."""
    return [
        PropertySchemaPublic(
            name=spec.name,
            label=spec.label,
            type=spec.kind.value,
            secret=spec.secret,
            description=spec.description,
            example=spec.example,
            used_by=[RoleParameterRef(role=r.code, parameter=p) for r, p in spec.used_by()],
        )
        for spec in PROPERTIES
    ]


@router.get("/wizard", response_model=WizardDetectedPublic)
def wizard_detect(_reader: CanRead, controller: ControllerDep) -> WizardDetectedPublic:
    """What the wizard detected on this machine, and whether it may run now."""
    found = controller.infrastructure.wizard.detect()
    node = found.controller
    return WizardDetectedPublic(
        hostname=found.hostname,
        addresses=found.addresses,
        suggested_public_ip=found.suggested_public_ip,
        controller=ControllerNodePublic(
            node_id=node.id,
            hostname=node.hostname,
            private_ip=node.private_ip,
            public_ip=node.public_ip,
            status=node.status,
            status_reason=node.status_reason,
            pending_operation=node.pending_operation,
            roles=node.roles,
        ),
        properties=found.properties,
        standard_roles=list(SINGLE_NODE_ROLES),
        available=found.available,
        unavailable_reason=found.unavailable_reason,
    )


@router.post("/wizard/plan", response_model=WizardPlanPublic)
def wizard_plan(
    body: WizardRequest, _admin: CanManageInfrastructure, controller: ControllerDep
) -> WizardPlanPublic:
    """The plan: the roles the IC node will carry and their key parameters; changes nothing."""
    plan = controller.infrastructure.wizard.plan(body.model_dump(exclude_none=True))
    return _plan(plan)


@router.post("/wizard", response_model=WizardRunPublic)
def wizard_run(
    body: WizardRequest, admin: CanManageInfrastructure, controller: ControllerDep
) -> WizardRunPublic:
    """Configuration Wizard: set the properties, assign the standard roles, activate the IC node."""
    run = controller.infrastructure.wizard.run(body.model_dump(exclude_none=True), actor=admin)
    return WizardRunPublic(
        node_id=run.node.id,
        status=run.node.status,
        pending_operation=run.node.pending_operation,
        plan=_plan(run.plan),
    )
