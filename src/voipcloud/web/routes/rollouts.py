"""The Rollouts pages: the list with the "Start rollout" form, and one rollout's live progress
with Pause / Resume / Cancel. Every account reads them; starting and commanding needs the
`nodes` permission. docs/operations.md, "Rollouts"."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from voipcloud.domain import rollouts as rules
from voipcloud.domain.errors import FieldError, InvalidInput, RuleViolation
from voipcloud.domain.numbers import parse_whole
from voipcloud.domain.roles import ROLES
from voipcloud.domain.rollouts import Command
from voipcloud.domain.statuses import NodeStatus
from voipcloud.services.controller import Controller
from voipcloud.web import flash
from voipcloud.web.deps import ControllerDep, PageRead, PostNodes, web_router
from voipcloud.web.forms import FormData, field_errors
from voipcloud.web.templating import is_htmx, render

router = web_router()
FIELDS = {
    "action",
    "node_ids",
    "filter",
    "status",
    "role",
    "q",
    "batch_size",
    "pause_seconds",
    "failure_tolerance",
    "reason",
    "include_maintenance",
}
DEFAULTS = {"action": "fix", "batch_size": "5", "pause_seconds": "10", "failure_tolerance": "0"}
LIST_SIZE = 50
TITLES = {"fix": "Fix Node", "activate": "Activate", "deactivate": "Deactivate"}


def _id(text: str) -> int:
    try:
        return parse_whole(text, low=1, high=2**31 - 1)
    except ValueError:
        return 0  # no such rollout: the service answers 404


def _list_page(
    request: Request,
    controller: Controller,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "rollouts/index.html",
        nav="rollouts",
        status_code=status_code,
        rollouts=controller.rollouts.page(limit=LIST_SIZE, offset=0),
        values={**DEFAULTS, **(values or {})},
        errors=errors or {},
        titles=TITLES,
        statuses=[s.value for s in NodeStatus],
        roles=list(ROLES),
    )


@router.get("/rollouts")
def rollouts_page(request: Request, _reader: PageRead, controller: ControllerDep) -> Response:
    """Every rollout, newest first; operators also get the form to start one."""
    return _list_page(request, controller, values=dict(request.query_params))


def _number(form: dict[str, str], name: str, errors: list[FieldError], *, whole: bool) -> Any:
    text = form.get(name, "").strip()
    try:
        return parse_whole(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        errors.append(FieldError(("body", name), f"must be {kind}"))
        return None


def _selection(form: dict[str, str]) -> tuple[list[int] | None, dict[str, str] | None]:
    """The chosen node ids (the "Fix the affected nodes" offer), else the listing's filter."""
    ids = form.get("node_ids", "").strip()
    if ids:
        try:
            return [parse_whole(p.strip(), low=1) for p in ids.split(",") if p.strip()], None
        except ValueError as exc:
            raise InvalidInput.one(
                ("body", "node_ids"), "must be node ids separated by commas"
            ) from exc
    chosen = {k: form[k].strip() for k in ("status", "role", "q") if form.get(k, "").strip()}
    return None, chosen


@router.post("/rollouts")
def start_rollout(
    request: Request, actor: PostNodes, controller: ControllerDep, form: FormData
) -> Response:
    """Start a rollout from the form; its page follows the progress."""
    errors: list[FieldError] = []
    batch_size = _number(form, "batch_size", errors, whole=True)
    pause = _number(form, "pause_seconds", errors, whole=False)
    tolerance = _number(form, "failure_tolerance", errors, whole=True)
    if errors:  # name every field at fault at once: check the others as the service will
        try:
            rules.check_settings(
                action=form.get("action", ""),
                batch_size=1 if batch_size is None else batch_size,
                pause_seconds=0 if pause is None else pause,
                failure_tolerance=0 if tolerance is None else tolerance,
            )
        except InvalidInput as exc:
            errors += exc.errors
    try:
        if errors:
            raise InvalidInput(errors)
        node_ids, chosen = _selection(form)
        view = controller.rollouts.create(
            actor=actor,
            action=form.get("action", ""),
            node_ids=node_ids,
            filter=chosen,
            batch_size=batch_size,
            pause_seconds=pause,
            failure_tolerance=tolerance,
            reason=form.get("reason") or None,
            include_maintenance=form.get("include_maintenance") == "yes",
        )
    except InvalidInput as exc:
        shown = field_errors(exc, fields=FIELDS)
        if "filter" in shown:  # the filter as a whole: shown beside its first field
            shown["status"] = shown.pop("filter")
        return _list_page(request, controller, values=dict(form), errors=shown, status_code=422)
    c = view.counts
    return flash.redirect(
        request,
        f"/rollouts/{view.rollout.id}",
        "success",
        f"Rollout {view.rollout.id} started: {TITLES[view.rollout.action]} over "
        f"{c.total - c.skipped} node(s) in {view.batches} batch(es)"
        + (f"; {c.skipped} in maintenance left out" if c.skipped else "")
        + ". It runs in the controller: you may close this page.",
    )


def _detail(request: Request, controller: Controller, rollout_id: int, **more: Any) -> Response:
    view = controller.rollouts.get(rollout_id)
    template = "rollouts/_progress.html" if is_htmx(request) else "rollouts/detail.html"
    return render(
        request,
        template,
        nav="rollouts",
        view=view,
        titles=TITLES,
        live=view.rollout.state in rules.ACTIVE or view.counts.running > 0,
        **more,
    )


@router.get("/rollouts/{rollout_id}")
def rollout_page(
    request: Request, rollout_id: str, _reader: PageRead, controller: ControllerDep
) -> Response:
    """One rollout: its progress bar and per-node outcomes, live while it runs."""
    return _detail(request, controller, _id(rollout_id))


@router.post("/rollouts/{rollout_id}/{command}")
def command_rollout(
    request: Request, rollout_id: str, command: str, actor: PostNodes, controller: ControllerDep
) -> Response:
    """Pause, resume or cancel; a refusal is shown above the progress."""
    number = _id(rollout_id)
    try:
        chosen = Command(command)
    except ValueError:
        return _detail(request, controller, number, refusal=f"No such command: {command}.")
    try:
        controller.rollouts.command(number, chosen, actor=actor)
    except RuleViolation as refusal:
        return _detail(request, controller, number, refusal=refusal.message)
    if is_htmx(request):
        return _detail(request, controller, number)
    return flash.redirect(request, f"/rollouts/{number}")
