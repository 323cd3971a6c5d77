"""Infrastructure Properties page: the form, a preview of the nodes a change affects, save."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response

from voipcloud.domain import versions
from voipcloud.domain.errors import InvalidInput
from voipcloud.domain.properties import PROPERTIES, PropertyKind, PropertySpec
from voipcloud.services.controller import Controller
from voipcloud.services.infrastructure import PropertiesChange
from voipcloud.web import flash, stale
from voipcloud.web.deps import ControllerDep, PageRead, PostInfrastructure, web_router
from voipcloud.web.flash import Kind
from voipcloud.web.forms import GENERAL, FormData, field_errors
from voipcloud.web.templating import is_htmx, render

router = web_router()
PAGE = "/infrastructure/properties"
_NAMES = {spec.name for spec in PROPERTIES}
_LISTS = (PropertyKind.IP_LIST, PropertyKind.HOST_LIST)


@dataclass(frozen=True, slots=True)
class FieldView:
    spec: PropertySpec
    used_by: str  # "sip.sip_domain, jabber.xmpp_domain" or ""


LABELS = {spec.name: spec.label for spec in PROPERTIES}
FIELDS = [
    FieldView(spec, ", ".join(f"{role.code}.{param}" for role, param in spec.used_by()))
    for spec in PROPERTIES
]


def _shown(props: dict[str, Any]) -> dict[str, str]:
    """Form values: lists as comma-separated text, secrets never (write-only)."""
    values: dict[str, str] = {}
    for spec in PROPERTIES:
        value = props.get(spec.name)
        if spec.secret:
            values[spec.name] = ""
        elif spec.kind in _LISTS:
            values[spec.name] = ", ".join(value or [])
        else:
            values[spec.name] = "" if value is None else str(value)
    return values


def _changes(form: dict[str, str]) -> dict[str, Any]:
    """The posted form as property changes; an empty password keeps the current one."""
    return {name: value for name, value in form.items() if name in _NAMES}


def _page(
    request: Request,
    controller: Controller,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    preview: PropertiesChange | None = None,
    status_code: int = 200,
    form_version: str | None = None,
    confirm: bool = False,
    asked_again: bool = False,
    fix_offer: list[int] | None = None,
) -> Response:
    """The page; `form_version` is the version the form's values were read at (None: now,
    with the current values)."""
    if form_version is None or values is None:  # values and version read together
        snapshot = controller.infrastructure.version()
        form_version = snapshot.etag
        if values is None:
            values = _shown(dict(snapshot.fields))
    return render(
        request,
        "infrastructure/index.html",
        nav="infrastructure",
        status_code=status_code,
        fields=FIELDS,
        values=values,
        errors=errors or {},
        preview=preview,
        labels=LABELS,
        updated_at=controller.infrastructure.updated_at(),
        form_version=form_version,
        confirm=confirm,
        asked_again=asked_again,
        fix_offer=fix_offer or [],
    )


@router.get(PAGE)
def infrastructure_page(request: Request, _reader: PageRead, controller: ControllerDep) -> Response:
    """Infrastructure Properties; after a save that marked nodes Damaged (`affected`), the
    offer to fix those still Damaged with one rollout."""
    offer = controller.rollouts.still_damaged(request.query_params.get("affected", ""))
    return _page(request, controller, fix_offer=offer)


@router.post(f"{PAGE}/preview")
def preview_properties(
    request: Request, admin: PostInfrastructure, controller: ControllerDep, form: FormData
) -> Response:
    """Which nodes saving these values would mark Damaged; saves nothing."""
    errors: dict[str, str] = {}
    result = None
    try:
        result = controller.infrastructure.update(actor=admin, changes=_changes(form), dry_run=True)
    except InvalidInput as exc:
        errors = field_errors(exc, fields=_NAMES)
    if is_htmx(request):
        return render(
            request, "infrastructure/_preview.html", preview=result, errors=errors, labels=LABELS
        )
    values = {**_shown({}), **{k: v for k, v in form.items() if k in _NAMES}}
    for spec in PROPERTIES:
        if spec.secret:
            values[spec.name] = ""
    return _page(
        request,
        controller,
        values=values,
        errors=errors,
        preview=result,
        status_code=422 if errors else 200,
        form_version=form.get("version", "")[:200],
    )


@router.post(PAGE)
def save_properties(
    request: Request, admin: PostInfrastructure, controller: ControllerDep, form: FormData
) -> Response:
    """Save the properties; Online nodes whose configuration moves are marked Damaged, so a
    save that would mark any asks first: the page shows the preview's list of those nodes and
    a confirmation button (`confirm=yes`, the node ids confirmed in `damaged`); a confirmed
    save that would now mark a node not confirmed asks again. Refused, with the current
    values shown, when the properties changed since the form was opened (its `version`)."""
    version = form.get("version", "")[:200]
    expected = stale.expected(version)
    try:
        versions.check(expected, controller.infrastructure.version())  # before asking
        confirmed = _confirmed(form)
        preview = controller.infrastructure.update(
            actor=admin, changes=_changes(form), dry_run=True
        )
        marked = {impact.node_id for impact in preview.affected}
        if marked and not marked <= confirmed:
            values = {k: v for k, v in form.items() if k in _NAMES}
            return _page(
                request,
                controller,
                values=values,
                preview=preview,
                form_version=version,
                confirm=True,
                asked_again=bool(confirmed),
            )
        result = controller.infrastructure.update(
            actor=admin, changes=_changes(form), expected=expected
        )
    except versions.StaleVersion as exc:
        return _page(
            request,
            controller,
            errors={GENERAL: stale.notice(exc, _typed(form, dict(exc.current.fields)), LABELS)},
            status_code=409,
        )
    except InvalidInput as exc:
        values = {k: v for k, v in form.items() if k in _NAMES}
        return _page(
            request,
            controller,
            values={**values, **{s.name: "" for s in PROPERTIES if s.secret}},
            errors=field_errors(exc, fields=_NAMES),
            status_code=422,
            form_version=version,
        )
    kind: Kind = "info" if result.affected else "success"
    # the page then offers one Fix rollout over the nodes this save marked Damaged
    offer = ",".join(str(i.node_id) for i in result.affected)
    return flash.redirect(
        request, f"{PAGE}?affected={offer}" if offer else PAGE, kind, _saved_message(result)
    )


def _confirmed(form: dict[str, str]) -> set[int]:
    """The node ids the administrator confirmed marking Damaged (none without `confirm`)."""
    if form.get("confirm") != "yes":
        return set()
    return {int(part) for part in form.get("damaged", "").split(",") if part.strip().isdigit()}


def _typed(form: dict[str, str], now: dict[str, Any]) -> dict[str, str]:
    """What the administrator had typed that differs from the values now saved (all the
    visible fields when none does); a typed password is only said to be typed."""
    current = _shown(now)
    typed = {}
    for spec in PROPERTIES:
        text = form.get(spec.name, "")
        if spec.secret:
            if text:
                typed[spec.name] = "a new password (not shown; type it again)"
        else:
            typed[spec.name] = text
    differing = {k: v for k, v in typed.items() if current.get(k) != v}
    return differing or typed


def _saved_message(result: PropertiesChange) -> str:
    if not result.changed:
        return "Nothing changed: the values are the ones already saved."
    text = "Saved: " + ", ".join(LABELS[name] for name in result.changed) + ". "
    if result.affected:
        marked = "; ".join(f"{i.hostname} ({i.reason})" for i in result.affected)
        text += (
            f"Nodes marked Damaged: {marked}. Fix them with one rollout (offered on this "
            "page), or use Fix Node on each to re-apply its configuration."
        )
    else:
        text += "No Online node was affected."
    return text
