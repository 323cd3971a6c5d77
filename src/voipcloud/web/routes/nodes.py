"""Node pages: Add Node, Edit, View Info, lifecycle actions and Delete Node."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Query, Request, Response

from voipcloud.domain import versions
from voipcloud.domain.errors import InvalidInput, NotFound, RuleViolation
from voipcloud.domain.model import Node
from voipcloud.domain.policy import RULE_FIELDS, Decision
from voipcloud.services.nodes import ACTIONS
from voipcloud.web import flash, stale, views
from voipcloud.web.deps import ControllerDep, PageNodes, PageRead, PostNodes, web_router
from voipcloud.web.forms import GENERAL, field_errors, local_url
from voipcloud.web.templating import render

router = web_router()
NODE_FIELDS = {"hostname", "private_ip", "public_ip", "container_id"}
Next = Annotated[str | None, Query(max_length=2048)]
NextField = Annotated[str, Form(max_length=2048)]
Text = Annotated[str, Form(max_length=1024)]


def _node_form_errors(exc: InvalidInput | RuleViolation) -> dict[str, str]:
    if isinstance(exc, InvalidInput):
        return field_errors(exc, fields=NODE_FIELDS)
    return {RULE_FIELDS.get(exc.rule, GENERAL): exc.message}


@router.get("/nodes/new")
def add_node_form(request: Request, _admin: PageNodes) -> Response:
    """The Add Node form."""
    return render(request, "nodes/form.html", nav="cloud", node=None, values={}, errors={})


@router.post("/nodes")
def add_node(
    request: Request,
    admin: PostNodes,
    controller: ControllerDep,
    hostname: Text = "",
    private_ip: Text = "",
    public_ip: Text = "",
    container_id: Text = "",
) -> Response:
    """Add a node; it starts Offline. Errors are shown next to their field."""
    values = {
        "hostname": hostname,
        "private_ip": private_ip,
        "public_ip": public_ip,
        "container_id": container_id,
    }
    try:
        node = controller.nodes.add(
            actor=admin,
            hostname=hostname,
            private_ip=private_ip,
            public_ip=public_ip or None,
            container_id=container_id or None,
        )
    except (InvalidInput, RuleViolation) as exc:
        return render(
            request,
            "nodes/form.html",
            status_code=422 if isinstance(exc, InvalidInput) else 409,
            nav="cloud",
            node=None,
            values=values,
            errors=_node_form_errors(exc),
        )
    return flash.redirect(
        request,
        f"/nodes/{node.id}/roles/new",
        "success",
        f"Node {node.hostname} added (NodeID {node.id}, Offline). Now assign its roles.",
    )


@router.get("/nodes/{node_id}/edit")
def edit_node_form(
    request: Request, node_id: int, _admin: PageNodes, controller: ControllerDep, next: Next = None
) -> Response:
    """The Edit node form (hostname and IPs)."""
    node = controller.nodes.get(node_id).node
    views.require_action(controller, node, "edit")
    return render(
        request,
        "nodes/form.html",
        nav="cloud",
        node=node,
        values=_current_values(node),
        form_version=versions.node_snapshot(node).etag,
        errors={},
        back=local_url(next),
    )


def _current_values(node: Node) -> dict[str, str]:
    return {
        "hostname": node.hostname,
        "private_ip": node.private_ip,
        "public_ip": node.public_ip or "",
        "container_id": node.container_id or "",
    }


NODE_LABELS = {
    "hostname": "Hostname",
    "private_ip": "Private IP",
    "public_ip": "Public IP",
    "container_id": "Container ID",
    "status": "status",
    "status_reason": "status reason",
    "pending_operation": "pending operation",
    "roles": "roles",
}


@router.post("/nodes/{node_id}/edit")
def edit_node(
    request: Request,
    node_id: int,
    admin: PostNodes,
    controller: ControllerDep,
    hostname: Text = "",
    private_ip: Text = "",
    public_ip: Text = "",
    next: NextField = "/",
    version: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Save the node's hostname and IPs; refused, with the current values shown, when the
    node changed since the form was opened (its hidden `version`)."""
    values = {"hostname": hostname, "private_ip": private_ip, "public_ip": public_ip}
    try:
        node = controller.nodes.edit(
            node_id,
            actor=admin,
            changes={**values, "public_ip": public_ip or None},
            expected=stale.expected(version),
        )
    except versions.StaleVersion as exc:
        current = controller.nodes.get(node_id).node
        return render(
            request,
            "nodes/form.html",
            status_code=409,
            nav="cloud",
            node=current,
            values=_current_values(current),
            form_version=versions.node_snapshot(current).etag,
            errors={GENERAL: stale.notice(exc, values, NODE_LABELS)},
            back=local_url(next),
        )
    except (InvalidInput, RuleViolation) as exc:
        return render(
            request,
            "nodes/form.html",
            status_code=422 if isinstance(exc, InvalidInput) else 409,
            nav="cloud",
            node=controller.nodes.get(node_id).node,
            values=values,
            form_version=version,
            errors=_node_form_errors(exc),
            back=local_url(next),
        )
    return flash.redirect(request, local_url(next), "success", f"Node {node.hostname} saved.")


@router.get("/nodes/{node_id}/info")
def node_info(
    request: Request, node_id: int, _reader: PageRead, controller: ControllerDep
) -> Response:
    """Node Quick Information (a layer over the listing)."""
    info = views.node_info(controller, node_id)
    return render(request, "nodes/info.html", nav="cloud", info=info)


@router.get("/nodes/{node_id}/actions")
def row_actions(
    request: Request,
    node_id: int,
    _operator: PageNodes,
    controller: ControllerDep,
    next: Next = None,
) -> Response:
    """A listing row's Actions menu (a fragment the row loads when its menu opens); `next` is
    the listing page the actions come back to."""
    row = views.row_menu(controller, node_id)
    return render(request, "cloud/_row_actions.html", row=row, back=local_url(next))


FORCE_CONSEQUENCE = (
    "The controller records node {hostname} Deactivated without its agent's signature and "
    "drops the pending deactivation. The agent may still be running the roles on the machine: "
    "make sure they are stopped (or the machine is gone). The reason is recorded in the "
    "node's history with your name."
)


def _force_page(
    request: Request, node: Node, *, back: str, reason: str = "", error: str | None = None
) -> Response:
    return render(
        request,
        "nodes/confirm.html",
        status_code=422 if error else 200,
        nav="cloud",
        title=f"Force deactivation: {node.hostname}",
        question=f"Force the deactivation of node {node.hostname}? Its agent has not signed "
        "the deactivation complete.",
        warning=FORCE_CONSEQUENCE.format(hostname=node.hostname),
        action=f"/nodes/{node.id}/actions/force-deactivate",
        button="Force deactivation",
        danger=True,
        reason_field=True,
        reason_required=True,
        reason_value=reason,
        reason_error=error,
        reason_placeholder="Why can the agent not finish? e.g. the VM was destroyed",
        back=back,
    )


@router.get("/nodes/{node_id}/actions/force-deactivate")
def confirm_force_deactivate(
    request: Request, node_id: int, _admin: PageNodes, controller: ControllerDep, next: Next = None
) -> Response:
    """Say what forcing means and ask for the reason before it."""
    node = controller.nodes.get(node_id).node
    views.require_action(controller, node, "force-deactivate")
    return _force_page(request, node, back=local_url(next))


@router.post("/nodes/{node_id}/actions/force-deactivate")
def force_deactivate(
    request: Request,
    node_id: int,
    admin: PostNodes,
    controller: ControllerDep,
    reason: Annotated[str, Form(max_length=1000)] = "",
    next: NextField = "/",
) -> Response:
    """Force deactivation: DeactivatePending -> Deactivated, with the reason."""
    back = local_url(next)
    try:
        node = controller.nodes.force_deactivate(node_id, actor=admin, reason=reason)
    except InvalidInput as exc:
        current = controller.nodes.get(node_id).node
        message = field_errors(exc, fields={"reason"}).get("reason") or str(exc)
        return _force_page(request, current, back=back, reason=reason, error=message)
    except RuleViolation as exc:
        return flash.redirect(request, back, "error", exc.message)
    return flash.redirect(
        request,
        back,
        "success",
        f"Node {node.hostname} is Deactivated (forced). Make sure its roles are stopped "
        "on the machine.",
    )


@router.post("/nodes/{node_id}/actions/{action}")
def node_action(
    request: Request,
    node_id: int,
    action: str,
    admin: PostNodes,
    controller: ControllerDep,
    reason: Annotated[str, Form(max_length=1000)] = "",
    confirm: Annotated[str, Form(max_length=8)] = "",
    next: NextField = "/",
) -> Response:
    """Set StandBy, Activate, Deactivate, Mark Damaged, Fix Node, regenerate the session key.

    An action whose consequence the rulebook names is carried out only once confirmed: a post
    without `confirm=yes` (a stale page, a script) is answered with the confirmation page."""
    back = local_url(next)
    if action not in ACTIONS:
        return flash.redirect(request, back, "error", f"There is no action {action!r}.")
    if confirm != "yes" and action in views.ACTION_OPERATIONS:
        node = controller.nodes.get(node_id).node
        decision = views.decide(controller, views.current_facts(controller, node), action)
        if decision.allowed and decision.confirm:
            return _confirm_page(request, node, action, decision, back=back)
    try:
        node = controller.nodes.action(node_id, action, actor=admin, reason=reason or None)
    except (RuleViolation, InvalidInput) as exc:
        return flash.redirect(request, back, "error", str(exc))
    if action == "regenerate-session-key":
        return flash.redirect(
            request,
            f"/nodes/{node.id}/session-key",
            "success",
            f"New session key for {node.hostname}: the previous key no longer works. Start "
            "the node's agent again with this one (the command is below).",
        )
    kind: flash.Kind = "info" if action == "mark-damaged" else "success"  # not a success
    return flash.redirect(request, back, kind, views.action_done(action, node))


CONFIRM_BUTTONS = {
    "deactivate": "Deactivate",
    "activate": "Activate anyway",
    "fix": "Fix anyway",
    "regenerate-session-key": "Regenerate session key",
    "standby": "Set StandBy",
}


def _confirm_page(
    request: Request, node: Node, action: str, decision: Decision, *, back: str
) -> Response:
    label = views.ACTION_LABELS[action]
    return render(
        request,
        "nodes/confirm.html",
        nav="cloud",
        title=f"{label}: {node.hostname}",
        question=f"{label} node {node.hostname} (NodeID {node.id}, {node.status.value})?",
        warning=decision.confirm,
        action=f"/nodes/{node.id}/actions/{action}",
        button=CONFIRM_BUTTONS.get(action, label),
        danger=action in ("deactivate", "regenerate-session-key"),
        confirm_field=True,
        back=back,
    )


@router.get("/nodes/{node_id}/actions/mark-damaged")
def confirm_mark_damaged(
    request: Request, node_id: int, _admin: PageNodes, controller: ControllerDep, next: Next = None
) -> Response:
    """Ask for the reason before marking the node Damaged."""
    node = controller.nodes.get(node_id).node
    views.require_action(controller, node, "mark-damaged")
    return render(
        request,
        "nodes/confirm.html",
        nav="cloud",
        title=f"Mark Damaged: {node.hostname}",
        question=f"Mark node {node.hostname} as Damaged? It stays Damaged until Fix Node.",
        action=f"/nodes/{node.id}/actions/mark-damaged",
        button="Mark Damaged",
        reason_field=True,
        confirm_field=True,  # this page is the confirmation: the post carries it out
        back=local_url(next),
    )


@router.get("/nodes/{node_id}/delete")
def confirm_delete(
    request: Request, node_id: int, _admin: PageNodes, controller: ControllerDep, next: Next = None
) -> Response:
    """Ask before Delete Node."""
    node = controller.nodes.get(node_id).node
    views.require_action(controller, node, "delete")
    return render(
        request,
        "nodes/confirm.html",
        nav="cloud",
        title=f"Delete Node: {node.hostname}",
        question=f"Delete node {node.hostname} (NodeID {node.id})? Its roles are released, "
        "its session key stops working and its agent is told to stop. The record stays in "
        "the history (status Deleted) and the hostname becomes free.",
        action=f"/nodes/{node.id}/delete",
        button="Delete Node",
        danger=True,
        back=local_url(next),
    )


@router.post("/nodes/{node_id}/delete")
def delete_node(
    request: Request,
    node_id: int,
    admin: PostNodes,
    controller: ControllerDep,
    next: NextField = "/",
) -> Response:
    """Delete Node: the node becomes Deleted."""
    back = local_url(next)
    try:
        node = controller.nodes.delete(node_id, actor=admin)
    except RuleViolation as exc:
        return flash.redirect(request, back, "error", exc.message)
    return flash.redirect(request, back, "success", f"Node {node.hostname} deleted.")


@router.get("/nodes/{node_id}/actions/{action}")
def confirm_action(
    request: Request,
    node_id: int,
    action: str,
    _admin: PageNodes,
    controller: ControllerDep,
    next: Next = None,
) -> Response:
    """Say what the action will do (the rulebook's consequence) and ask before it."""
    if action not in ACTIONS:
        raise NotFound(f"There is no action {action!r}.")
    node = controller.nodes.get(node_id).node
    decision = views.require_action(controller, node, action)
    return _confirm_page(request, node, action, decision, back=local_url(next))
