"""Role pages: Assign Role, the session key confirmation, role parameters, Delete Assignment
and Administrative Remove."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Query, Request, Response

from voipcloud.api import enrolment
from voipcloud.domain import versions
from voipcloud.domain.errors import InvalidInput, NotFound, RuleViolation
from voipcloud.domain.roles import ROLES, SECRET_MASK, Role
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.roles import AssignedRole
from voipcloud.web import flash, stale, views
from voipcloud.web.deps import ControllerDep, PageNodes, PageSecrets, PostNodes, web_router
from voipcloud.web.forms import GENERAL, FormData, field_errors, local_url
from voipcloud.web.templating import render

router = web_router()
Next = Annotated[str | None, Query(max_length=2048)]
NextField = Annotated[str, Form(max_length=2048)]
PREFIX = "p_"  # form fields of role parameters: p_<parameter name>


def _role(code: str) -> Role:
    role = ROLES.get(code)
    if role is None:
        raise NotFound(f"There is no role {code!r}; known roles: {', '.join(ROLES)}.")
    return role


def _parameters(
    role: Role, form: dict[str, str], *, keep_blank: bool, drop_shown_defaults: bool = False
) -> dict[str, Any]:
    """The role's parameters from the form; a blank field means "the default". With
    `drop_shown_defaults` (the Assign Role form, which fills each field with its catalogue
    default), a field still holding that default is left at the default, as the wizard and
    the CLI do: only what the administrator changed becomes an explicit value."""
    values: dict[str, Any] = {}
    for param in role.parameters:
        text = form.get(PREFIX + param.name, "").strip()
        if drop_shown_defaults and param.default is not None and text == str(param.default):
            continue
        if text:
            values[param.name] = text
        elif keep_blank and not param.secret:
            values[param.name] = None  # back to the default
    return values


def _errors(role: Role | None, exc: InvalidInput | RuleViolation) -> dict[str, str]:
    if isinstance(exc, RuleViolation):
        return {GENERAL: exc.message}
    names = {p.name for p in role.parameters} if role else set()
    errors = {}
    for name, message in field_errors(exc).items():
        errors[PREFIX + name if name in names else name] = message
    return errors


@router.get("/nodes/{node_id}/roles/new")
def assign_form(
    request: Request,
    node_id: int,
    _admin: PageNodes,
    controller: ControllerDep,
    role: Annotated[str | None, Query(max_length=16)] = None,
    next: Next = None,
) -> Response:
    """The Assign Role form; its parameters come from the role catalogue."""
    node = controller.nodes.get(node_id).node
    views.require_action(controller, node, "assign-role")
    chosen = ROLES.get(role or "")
    return render(
        request,
        "roles/assign.html",
        nav="cloud",
        node=node,
        roles=views.assignable_roles(node),
        role=chosen,
        values={},
        errors={},
        back=local_url(next),
    )


@router.post("/nodes/{node_id}/roles")
def assign_role(
    request: Request,
    node_id: int,
    admin: PostNodes,
    controller: ControllerDep,
    form: FormData,
) -> Response:
    """Assign the role with its parameters; then show the node's session key."""
    code = form.get("role", "")[:16]
    spec = ROLES.get(code)
    try:
        if spec is None:
            raise InvalidInput.one(("body", "role"), "choose a role")
        controller.roles.assign(
            node_id,
            actor=admin,
            role=code,
            parameters=_parameters(spec, form, keep_blank=False, drop_shown_defaults=True),
        )
    except (InvalidInput, RuleViolation) as exc:
        node = controller.nodes.get(node_id).node
        return render(
            request,
            "roles/assign.html",
            status_code=422 if isinstance(exc, InvalidInput) else 409,
            nav="cloud",
            node=node,
            roles=views.assignable_roles(node),
            role=spec,
            values=form,
            errors=_errors(spec, exc),
            back=local_url(form.get("next")),
        )
    return flash.redirect(request, f"/nodes/{node_id}/session-key?role={code}")


@router.get("/nodes/{node_id}/session-key")
def session_key(
    request: Request,
    node_id: int,
    _reader: PageSecrets,
    controller: ControllerDep,
    role: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    """The session key confirmation: write it down, run the agent with it."""
    details = controller.nodes.get(node_id)
    joining = enrolment.for_request(request)
    facts = views.current_facts(controller, details.node)
    return render(
        request,
        "roles/session_key.html",
        nav="cloud",
        node=details.node,
        # what comes next, as the rulebook says for the node now
        can_activate=views.decide(controller, facts, "activate").allowed,
        can_assign=views.decide(controller, facts, "assign-role").allowed,
        role=ROLES.get(role or ""),
        session_key=details.session_key,
        command=joining.agent_command,
        enrolment=joining,
    )


@router.get("/nodes/{node_id}/roles/{code}/edit")
def edit_parameters_form(
    request: Request,
    node_id: int,
    code: str,
    _admin: PageNodes,
    controller: ControllerDep,
    next: Next = None,
) -> Response:
    """The role's parameters, editable."""
    spec = _role(code)
    node = controller.nodes.get(node_id).node
    assigned = {a.role.code: a for a in controller.roles.assigned(node_id)}
    if code not in assigned:
        raise NotFound(f"Node {node.hostname} has no {spec.name} role.")
    return render(
        request,
        "roles/edit.html",
        nav="cloud",
        node=node,
        role=spec,
        assigned=assigned[code],
        values=_explicit(spec, assigned[code]),
        form_version=versions.assignment_snapshot(
            node.hostname, spec, assigned[code].assignment
        ).etag,
        errors={},
        back=local_url(next),
    )


def _explicit(spec: Role, assigned: AssignedRole) -> dict[str, str]:
    """The form's values: the explicit ones (secrets never shown), empty for defaults."""
    return {
        PREFIX + name: ("" if spec.is_secret(name) else value.value)
        for name, value in assigned.effective.items()
        if value.source == "explicit"
    }


@router.post("/nodes/{node_id}/roles/{code}/edit")
def edit_parameters(
    request: Request,
    node_id: int,
    code: str,
    admin: PostNodes,
    controller: ControllerDep,
    form: FormData,
) -> Response:
    """Save the role's parameters (an Online node: Customer Connectivity only keeps it Online);
    refused, with the current values shown, when the assignment changed since the form was
    opened (its hidden `version`)."""
    spec = _role(code)
    back = local_url(form.get("next"))
    values = _parameters(spec, form, keep_blank=True)
    for param in spec.parameters:  # a blank secret keeps the stored one
        if param.secret and param.name not in values:
            values[param.name] = SECRET_MASK
    version = form.get("version", "")[:200]
    try:
        node = controller.roles.edit(
            node_id,
            actor=admin,
            role=code,
            parameters=values,
            expected=stale.expected(version),
        )
    except versions.StaleVersion as exc:
        current_node = controller.nodes.get(node_id).node
        current = {a.role.code: a for a in controller.roles.assigned(node_id)}.get(code)
        if current is None:
            raise NotFound(f"Node {current_node.hostname} has no {spec.name} role.") from exc
        labels = {p.name: p.label for p in spec.parameters}
        typed = {
            p.name: form.get(PREFIX + p.name, "").strip() or "(default)"
            for p in spec.parameters
            if not p.secret
        }
        return render(
            request,
            "roles/edit.html",
            status_code=409,
            nav="cloud",
            node=current_node,
            role=spec,
            assigned=current,
            values=_explicit(spec, current),
            form_version=versions.assignment_snapshot(
                current_node.hostname, spec, current.assignment
            ).etag,
            errors={GENERAL: stale.notice(exc, typed, labels)},
            back=back,
        )
    except (InvalidInput, RuleViolation) as exc:
        assigned = {a.role.code: a for a in controller.roles.assigned(node_id)}
        return render(
            request,
            "roles/edit.html",
            status_code=422 if isinstance(exc, InvalidInput) else 409,
            nav="cloud",
            node=controller.nodes.get(node_id).node,
            role=spec,
            assigned=assigned.get(code),
            values=form,
            form_version=version,
            errors=_errors(spec, exc),
            back=back,
        )
    if node.status is NodeStatus.DAMAGED:  # saved, but the node is not fine: not green
        return flash.redirect(
            request,
            back,
            "info",
            f"{spec.name} parameters of {node.hostname} saved; the node is now Damaged (its "
            "running configuration is out of date): use Fix Node to apply them.",
        )
    return flash.redirect(
        request,
        back,
        "success",
        f"{spec.name} parameters of {node.hostname} saved; node is {node.status.value}.",
    )


@router.get("/nodes/{node_id}/roles/{code}/delete")
def confirm_delete_assignment(
    request: Request,
    node_id: int,
    code: str,
    _admin: PageNodes,
    controller: ControllerDep,
    next: Next = None,
) -> Response:
    """Ask before Delete Assignment."""
    spec = _role(code)
    node = controller.nodes.get(node_id).node
    return render(
        request,
        "nodes/confirm.html",
        nav="cloud",
        title=f"Delete Assignment: {spec.name} on {node.hostname}",
        question=f"Delete the assignment of the {spec.name} role ({spec.code}) on node "
        f"{node.hostname}? Its parameters are forgotten.",
        action=f"/nodes/{node.id}/roles/{spec.code}/delete",
        button="Delete Assignment",
        danger=True,
        back=local_url(next),
    )


@router.post("/nodes/{node_id}/roles/{code}/delete")
def delete_assignment(
    request: Request,
    node_id: int,
    code: str,
    admin: PostNodes,
    controller: ControllerDep,
    next: NextField = "/",
) -> Response:
    """Delete Assignment: the role is unassigned."""
    back = local_url(next)
    try:
        node = controller.roles.unassign(node_id, actor=admin, role=code)
    except RuleViolation as exc:
        return flash.redirect(request, back, "error", exc.message)
    return flash.redirect(
        request, back, "success", f"Role {code} unassigned from node {node.hostname}."
    )


@router.get("/nodes/{node_id}/roles/{code}/remove")
def confirm_remove(
    request: Request,
    node_id: int,
    code: str,
    admin: PageNodes,
    controller: ControllerDep,
    next: Next = None,
) -> Response:
    """Administrative Remove: show the warning (the service's own text) and ask."""
    spec = _role(code)
    node = controller.nodes.get(node_id).node
    try:  # without confirmation the service checks every rule and answers with the warning
        controller.roles.admin_remove(node_id, actor=admin, role=code, confirm=False)
        warning = ""
    except InvalidInput as exc:
        warning = exc.errors[0].message
    return render(
        request,
        "nodes/confirm.html",
        nav="cloud",
        title=f"Remove {spec.name} from {node.hostname}",
        question=f"Remove the {spec.name} role from the Infrastructure Controller node?",
        warning=warning,
        action=f"/nodes/{node.id}/roles/{spec.code}/remove",
        button=f"Remove {spec.name}",
        danger=True,
        confirm_field=True,
        back=local_url(next),
    )


@router.post("/nodes/{node_id}/roles/{code}/remove")
def remove_role(
    request: Request,
    node_id: int,
    code: str,
    admin: PostNodes,
    controller: ControllerDep,
    confirm: Annotated[str, Form(max_length=8)] = "",
    next: NextField = "/",
) -> Response:
    """Administrative Remove, once confirmed."""
    back = local_url(next)
    try:
        node = controller.roles.admin_remove(
            node_id, actor=admin, role=code, confirm=confirm == "yes"
        )
    except (RuleViolation, InvalidInput) as exc:
        message = exc.message if isinstance(exc, RuleViolation) else exc.errors[0].message
        return flash.redirect(request, back, "error", message)
    return flash.redirect(
        request,
        back,
        "success",
        f"Role {code} removed from the Infrastructure Controller node {node.hostname}.",
    )
