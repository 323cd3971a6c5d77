"""Configuration Wizard page: detected values and questions, the plan, then live activation.

Step 1 (GET /wizard) shows what was detected and asks for the domain and the public IP;
step 2 (POST /wizard/plan) shows the plan; confirming (POST /wizard/run) runs the wizard and
step 3 (GET /wizard/progress) follows the IC node until Online, or shows the failure reason
with a retry button.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response

from voipcloud.api import enrolment
from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.model import Node
from voipcloud.domain.roles import SINGLE_NODE_ROLES
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.controller import Controller
from voipcloud.web import flash
from voipcloud.web.deps import ControllerDep, PageInfrastructure, PostInfrastructure, web_router
from voipcloud.web.forms import FormData, field_errors
from voipcloud.web.templating import render

router = web_router()
ANSWERS = (
    "system_domain",
    "public_ip",
    "private_ip",
    "management_hostname",
    "infrastructure_name",
    "timezone",
)


def _answers(form: dict[str, str]) -> dict[str, Any]:
    return {name: form[name].strip() for name in ANSWERS if form.get(name, "").strip()}


def _start(
    request: Request,
    controller: Controller,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    refusal: str | None = None,
    status_code: int = 200,
) -> Response:
    found = controller.infrastructure.wizard.detect()
    if values is None:
        props = found.properties
        values = {
            "system_domain": ""
            if props["system_domain"] == "voipcloud.local"
            else props["system_domain"],
            "public_ip": found.suggested_public_ip or "",
            "private_ip": found.controller.private_ip,
            "management_hostname": "",
            "infrastructure_name": props["infrastructure_name"],
            "timezone": props["timezone"],
        }
    addresses = list(dict.fromkeys([found.controller.private_ip, *found.addresses]))
    return render(
        request,
        "wizard/index.html",
        nav="cloud",
        status_code=status_code,
        found=found,
        addresses=addresses,
        values=values,
        errors=errors or {},
        refusal=refusal or found.unavailable_reason,
        standard_roles=SINGLE_NODE_ROLES,
    )


@router.get("/wizard")
def wizard_page(
    request: Request, _admin: PageInfrastructure, controller: ControllerDep
) -> Response:
    """Configuration Wizard: detected values and the questions."""
    return _start(request, controller)


@router.post("/wizard/plan")
def wizard_plan(
    request: Request, _admin: PostInfrastructure, controller: ControllerDep, form: FormData
) -> Response:
    """The plan: the roles the IC node will carry, with their key parameters."""
    answers = _answers(form)
    try:
        plan = controller.infrastructure.wizard.plan(answers)
    except InvalidInput as exc:
        errors = field_errors(exc, fields=set(ANSWERS))
        return _start(request, controller, values=form, errors=errors, status_code=422)
    except RuleViolation as exc:
        return _start(request, controller, values=form, refusal=exc.message, status_code=409)
    served = urlsplit(enrolment.for_request(request).controller_url)
    port = served.port or (443 if served.scheme == "https" else 80)
    return render(
        request,
        "wizard/plan.html",
        nav="cloud",
        plan=plan,
        answers=answers,
        served_url=served.geturl(),
        served_port=port,
    )


@router.post("/wizard/run")
def wizard_run(
    request: Request, admin: PostInfrastructure, controller: ControllerDep, form: FormData
) -> Response:
    """Run the wizard: set the properties, assign the roles, activate the IC node."""
    try:
        controller.infrastructure.wizard.run(_answers(form), actor=admin)
    except InvalidInput as exc:
        errors = field_errors(exc, fields=set(ANSWERS))
        return _start(request, controller, values=form, errors=errors, status_code=422)
    except RuleViolation as exc:
        return _start(request, controller, values=form, refusal=exc.message, status_code=409)
    return flash.redirect(request, "/wizard/progress")


def _progress(controller: Controller) -> dict[str, Any]:
    node: Node = controller.infrastructure.wizard.controller_node()
    props = controller.infrastructure.properties()
    settled = node.pending_operation is None
    return {
        "node": node,
        "online": settled and node.status is NodeStatus.ONLINE,
        "failed": settled and node.status is NodeStatus.ACTIVATE_FAILED,
        "retry": {"system_domain": props["system_domain"], "public_ip": node.public_ip or ""},
        "fingerprint": f"{node.status}|{node.pending_operation}|{node.row_version}",
    }


@router.get("/wizard/progress")
def wizard_progress(
    request: Request, _admin: PageInfrastructure, controller: ControllerDep
) -> Response:
    """Step 3: the IC node's activation, followed live."""
    return render(request, "wizard/progress.html", nav="cloud", **_progress(controller))


@router.get("/wizard/status")
def wizard_status(
    request: Request, _admin: PageInfrastructure, controller: ControllerDep, fp: str | None = None
) -> Response:
    """The activation status alone, for live updates: 204 while it has not changed."""
    state = _progress(controller)
    if fp and fp == state["fingerprint"]:
        return Response(status_code=204)
    return render(request, "wizard/_status.html", **state)
