"""Fleet pages: Enter / Leave Maintenance from Quick info, and the Node Listing's bulk
actions (the action bar posts here: a confirmation first, then one result per node)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Request, Response

from voipcloud.domain import bulk
from voipcloud.domain.bulk import BulkRequest
from voipcloud.domain.errors import InvalidInput, RuleViolation
from voipcloud.domain.numbers import is_whole
from voipcloud.web import flash
from voipcloud.web.deps import ControllerDep, PostNodes, web_router
from voipcloud.web.fleet import BulkForm, BulkOutcome
from voipcloud.web.forms import local_url
from voipcloud.web.templating import render

router = web_router()
NextField = Annotated[str, Form(max_length=2048)]
Short = Annotated[str, Form(max_length=253)]
PREVIEW = 20  # hostnames named on the confirmation


@router.post("/nodes/{node_id}/maintenance")
def enter_maintenance(
    request: Request,
    node_id: int,
    actor: PostNodes,
    controller: ControllerDep,
    reason: Annotated[str, Form(max_length=1000)] = "",
    next: NextField = "/",
) -> Response:
    """Enter Maintenance with the reason given beside the button."""
    back = local_url(next)
    try:
        node = controller.maintenance.enter(node_id, actor=actor, reason=reason)
    except InvalidInput as exc:
        text = "; ".join(e.message for e in exc.errors)
        return flash.redirect(request, back, "error", f"Enter Maintenance: the reason {text}.")
    except RuleViolation as exc:
        return flash.redirect(request, back, "error", exc.message)
    return flash.redirect(
        request,
        back,
        "success",
        f"Node {node.hostname} is in maintenance: left out of bulk actions and rollouts, "
        "no notifications about it.",
    )


@router.post("/nodes/{node_id}/maintenance/leave")
def leave_maintenance(
    request: Request,
    node_id: int,
    actor: PostNodes,
    controller: ControllerDep,
    next: NextField = "/",
) -> Response:
    """Leave Maintenance."""
    back = local_url(next)
    try:
        node = controller.maintenance.leave(node_id, actor=actor)
    except RuleViolation as exc:
        return flash.redirect(request, back, "error", exc.message)
    return flash.redirect(request, back, "success", f"Node {node.hostname} left maintenance.")


@router.post("/nodes/bulk")
def bulk_action(
    request: Request,
    actor: PostNodes,
    controller: ControllerDep,
    action: Annotated[str, Form(max_length=32)] = "",
    node_ids: Annotated[list[str], Form(max_length=bulk.MAX_SELECTION + 1)] = [],  # noqa: B006
    all_matching: Annotated[str, Form(max_length=8)] = "",
    f_status: Short = "",
    f_role: Short = "",
    f_q: Short = "",
    f_maintenance: Short = "",
    include_maintenance: Annotated[str, Form(max_length=8)] = "",
    bulk_role: Annotated[str, Form(max_length=16)] = "",
    reason: Annotated[str, Form(max_length=1000)] = "",
    confirm: Annotated[str, Form(max_length=8)] = "",
    next: NextField = "/",
) -> Response:
    """The bar's action over the ticked nodes, or over every node the listing's filter
    matches: first a confirmation naming how many, then the per-node results."""
    back = local_url(next)
    filters: dict[str, Any] = {
        name: value
        for name, value in (
            ("status", f_status),
            ("role", f_role),
            ("q", f_q),
            ("maintenance", {"yes": True, "no": False}.get(f_maintenance)),
        )
        if value not in ("", None)
    }
    form = BulkForm(
        action=action,
        node_ids=[int(v) for v in node_ids if is_whole(v, max_digits=9)],
        all_matching=all_matching == "yes",
        filter=filters,
        include_maintenance=include_maintenance == "yes",
        role=bulk_role if action in bulk.ROLE_ACTIONS else "",
        reason=reason,
        next=back,
    )
    if not action:
        return flash.redirect(request, back, "error", "Choose an action for the selected nodes.")
    if not form.all_matching and not form.node_ids:
        return flash.redirect(
            request,
            back,
            "error",
            "Select nodes first: tick them in the listing, or select all the nodes matching "
            "the filter.",
        )
    try:
        selection = bulk.parse_selection(
            None if form.all_matching else form.node_ids,
            form.filter if form.all_matching else None,
            where="form",
        )
        wanted = bulk.check_request(
            BulkRequest(
                action=action,
                selection=selection,
                include_maintenance=form.include_maintenance,
                reason=reason or None,
                role=form.role or None,
            ),
            where="form",
        )
        if confirm != "yes":
            ids = controller.bulk.select(selection)
            return _confirmation(request, controller, form, ids, wanted.selection.describe())
        results = controller.bulk.run(wanted, actor=actor)
    except InvalidInput as exc:
        text = "; ".join(f"{e.loc[-1]}: {e.message}" for e in exc.errors)
        return flash.redirect(request, back, "error", f"{form.title}: {text}.")
    return render(
        request,
        "cloud/bulk_result.html",
        nav="cloud",
        outcome=BulkOutcome(form=form, results=results),
    )


def _confirmation(
    request: Request, controller: ControllerDep, form: BulkForm, ids: list[int], what: str
) -> Response:
    found, kept = controller.bulk.preview(ids, at_most=PREVIEW)
    return render(
        request,
        "cloud/bulk_confirm.html",
        nav="cloud",
        form=form,
        count=len(ids),
        preview=found,
        what=what,
        in_maintenance=kept,
    )
