"""Add Node's "Import many": a CSV file of nodes, the per-row results, the keys as a download."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import File, Request, Response, UploadFile

from voipcloud.api import enrolment
from voipcloud.domain import imports
from voipcloud.domain.errors import InvalidInput
from voipcloud.web.deps import ControllerDep, PostNodes, web_router
from voipcloud.web.templating import render

router = web_router()
KEYS_FILENAME = "voipcloud-session-keys.csv"


def _form_again(request: Request, message: str) -> Response:
    return render(
        request,
        "nodes/form.html",
        status_code=422,
        nav="cloud",
        node=None,
        values={},
        errors={},
        import_error=message,
    )


@router.post("/nodes/import")
def import_nodes(
    request: Request,
    actor: PostNodes,
    controller: ControllerDep,
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Import the CSV: one result per row; the session keys offered as a file to download
    (never shown on the page)."""
    if file is None or not file.filename:
        return _form_again(request, "Choose a CSV file to import.")
    raw = file.file.read(imports.MAX_CSV_BYTES + 1)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _form_again(request, f"{file.filename} is not UTF-8 text (save it as CSV UTF-8).")
    try:
        rows = [imports.row_of(row) for row in imports.rows_from_csv(text)]
        results = controller.imports.run(rows, actor=actor)
    except InvalidInput as exc:
        return _form_again(request, f"{file.filename}: {exc.errors[0].message}")
    created, refused = imports.summary(results)
    keys = imports.keys_csv(results)
    with_keys = sum(1 for r in results if r.created and r.session_key)
    return render(
        request,
        "nodes/import.html",
        nav="cloud",
        filename=file.filename,
        results=results,
        created=created,
        refused=refused,
        with_keys=with_keys,
        keys_href="data:text/csv;charset=utf-8;base64," + base64.b64encode(keys.encode()).decode(),
        keys_filename=KEYS_FILENAME,
        enrolment=enrolment.for_request(request),
    )
