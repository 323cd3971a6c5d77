"""Rollouts: start one, read them, pause, resume and cancel (the runner is rollout_runner.py).

A rollout is created in one transaction with every node it chose (node ids, or the listing's
filter resolved to ids now) cut into batches; nodes in maintenance are skipped unless included.
From then on all of its progress is in the database, so any controller's runner can advance
it, and a restarted one resumes it. docs/operations.md, "Rollouts".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from voipcloud.domain import rollouts as rules
from voipcloud.domain.errors import FieldError, InvalidInput, NotFound, RuleViolation
from voipcloud.domain.filters import NodeFilter
from voipcloud.domain.model import Page
from voipcloud.domain.rollouts import Command, Counts, NodeOutcome
from voipcloud.domain.statuses import NodeStatus
from voipcloud.domain.validation import check_text
from voipcloud.services.context import Context
from voipcloud.store import events
from voipcloud.store import nodes as node_rows
from voipcloud.store import rollouts as rows
from voipcloud.store.rollouts import MemberRow, RolloutRow

FILTER_FIELDS = ("status", "role", "q")
COMMAND_ATTEMPTS = 5
DONE = {
    Command.PAUSE: "paused",
    Command.RESUME: "resumed",
    Command.CANCEL: "cancelled",
}  # a runner of another controller may move the rollout meanwhile


def username_of(actor: str) -> str:
    """The account name of an actor ("operator:bob" -> "bob")."""
    return actor.split(":", 1)[1] if ":" in actor else actor


def rollout_actor(rollout_id: int, created_by: str) -> str:
    """Who the node operations of a rollout are recorded as."""
    return f"rollout {rollout_id} (by {created_by})"


@dataclass(frozen=True, slots=True)
class RolloutView:
    rollout: RolloutRow
    counts: Counts
    batches: int  # how many batches in all
    current_batch: int | None  # the first batch with nodes not finished (None: none left)
    members: list[MemberRow] | None = None  # only for one rollout

    @property
    def commands(self) -> list[Command]:
        return rules.allowed_commands(self.rollout.state)


def _counts(found: Mapping[str, int]) -> Counts:
    by = {NodeOutcome(o): n for o, n in found.items()}
    return Counts(
        total=sum(by.values()),
        done=by.get(NodeOutcome.DONE, 0),
        failed=sum(by.get(o, 0) for o in rules.FAILURES),
        skipped=by.get(NodeOutcome.SKIPPED, 0),
        pending=by.get(NodeOutcome.PENDING, 0),
        running=by.get(NodeOutcome.RUNNING, 0),
    )


def _check_reason(reason: Any) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise InvalidInput.one(("body", "reason"), "must be a text")
    if len(reason) > rules.MAX_REASON:
        raise InvalidInput.one(("body", "reason"), f"must be at most {rules.MAX_REASON} characters")
    try:
        check_text(reason, multiline=True)
    except ValueError as exc:
        raise InvalidInput.one(("body", "reason"), str(exc)) from exc
    return reason.strip() or None


def _parse_filter(given: Mapping[str, Any]) -> NodeFilter:
    unknown = sorted(set(given) - set(FILTER_FIELDS))
    if unknown:
        raise InvalidInput.one(("body", "filter", unknown[0]), "unknown filter field")
    try:
        return NodeFilter.parse(**{k: given.get(k) for k in FILTER_FIELDS})
    except InvalidInput as exc:  # the listing's filter names query fields: name the body's
        raise InvalidInput(
            [FieldError(("body", "filter", *e.loc[1:]), e.message, e.type) for e in exc.errors]
        ) from exc


class RolloutService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.on_created: list[Any] = []  # callables: the runner's wake-up

    # --- reads -------------------------------------------------------------------------

    def page(self, *, limit: int = 50, offset: int = 0) -> Page[RolloutView]:
        with self._ctx.db.read() as conn:
            found = rows.page(conn, limit=limit, offset=offset)
            counted = rows.outcome_counts(conn, [r.id for r in found.items])
            batches = _batch_positions(conn, [r.id for r in found.items])
        return Page(
            items=[
                RolloutView(r, _counts(counted[r.id]), *batches.get(r.id, (0, None)))
                for r in found.items
            ],
            total=found.total,
        )

    def get(self, rollout_id: int) -> RolloutView:
        with self._ctx.db.read() as conn:
            rollout = _load(conn, rollout_id)
            members = rows.members(conn, rollout_id)
        return view_of(rollout, members)

    def still_damaged(self, node_ids: str) -> list[int]:
        """Of the node ids written in `node_ids` ("3,5,8"), those still Damaged (the offer to
        fix the nodes an infrastructure change marked Damaged, with one rollout)."""
        ids = _ids_in(node_ids, at_most=rules.MAX_NODES)
        if not ids:
            return []
        with self._ctx.db.read() as conn:
            known = node_rows.brief(conn, ids)
        return [i for i in ids if i in known and known[i][1] == NodeStatus.DAMAGED.value]

    # --- changes -----------------------------------------------------------------------

    def create(
        self,
        *,
        actor: str,
        action: str,
        batch_size: int,
        pause_seconds: float,
        failure_tolerance: int,
        node_ids: Sequence[int] | None = None,
        filter: Mapping[str, Any] | None = None,
        reason: str | None = None,
        include_maintenance: bool = False,
    ) -> RolloutView:
        rules.check_settings(
            action=action,
            batch_size=batch_size,
            pause_seconds=pause_seconds,
            failure_tolerance=failure_tolerance,
        )
        reason = _check_reason(reason)
        if (node_ids is None) == (filter is None):
            raise InvalidInput.one(
                ("body", "node_ids"), "give either node_ids or filter (exactly one of them)"
            )
        now = self._ctx.clock()
        created_by = username_of(actor)
        with self._ctx.db.write() as conn:
            if node_ids is not None:
                chosen = _chosen_ids(conn, node_ids)
            else:
                assert filter is not None
                flt = _parse_filter(filter)
                chosen = node_rows.ids_matching(conn, flt, limit=rules.MAX_NODES + 1)
                if len(chosen) > rules.MAX_NODES:
                    raise InvalidInput.one(
                        ("body", "filter"),
                        f"matches more than {rules.MAX_NODES} nodes; narrow it",
                    )
                if not chosen:
                    raise InvalidInput.one(("body", "filter"), "matches no node")
            known = node_rows.brief(conn, chosen)
            left_out = {
                node_id: rules.maintenance_skip_reason(hostname, maintenance)
                for node_id, (hostname, _status, maintenance) in known.items()
                if maintenance is not None and not include_maintenance
            }
            members = rules.plan_members(chosen, batch_size=batch_size, in_maintenance=left_out)
            included = sum(m.outcome is NodeOutcome.PENDING for m in members)
            if included == 0:
                raise InvalidInput.one(
                    ("body", "include_maintenance"),
                    "every chosen node is in maintenance; set include_maintenance to act on "
                    "them, or choose other nodes",
                )
            rules.check_tolerance(failure_tolerance, included)
            rollout_id = rows.insert_rollout(
                conn,
                action=action,
                batch_size=batch_size,
                pause_seconds=float(pause_seconds),
                failure_tolerance=failure_tolerance,
                reason=reason,
                created_by=created_by,
                members=members,
                now=now,
            )
            skipped = len(members) - included
            events.append(
                conn,
                at=now,
                actor=actor,
                node_id=None,
                operation="rollout-started",
                reason=(
                    f"rollout {rollout_id}: {action} over {included} node(s) in "
                    f"{rules.batches(members)} batch(es) of {batch_size}, "
                    f"{pause_seconds:g} s between batches, failure tolerance "
                    f"{failure_tolerance}"
                    + (f"; {skipped} in maintenance left out" if skipped else "")
                    + (f" — {reason}" if reason else "")
                ),
            )
        for wake in self.on_created:
            wake()
        return self.get(rollout_id)

    def command(self, rollout_id: int, command: Command, *, actor: str) -> RolloutView:
        """Pause, resume or cancel; 409 naming the rule when the state does not allow it."""
        for _ in range(COMMAND_ATTEMPTS):
            now = self._ctx.clock()
            with self._ctx.db.write() as conn:
                rollout = _load(conn, rollout_id)
                target = rules.command_target(command, rollout.state, rollout_id=rollout_id)
                values: dict[str, Any] = {"state": target.value}
                who = username_of(actor)
                if command is Command.CANCEL:
                    values.update(
                        state_reason=f"cancelled by {who}", finished_at=now, next_batch_at=None
                    )
                if not rows.claim(conn, rollout, now=now, **values):
                    continue  # the runner of a controller moved it: read it again
                text = f"rollout {rollout_id}: {DONE[command]} by {who}"
                if command is Command.CANCEL:
                    skipped = rows.skip_pending(
                        conn,
                        rollout_id,
                        reason=f"not started: the rollout was cancelled by {who}",
                        now=now,
                    )
                    text += f"; {skipped} node(s) not started are skipped"
                elif command is Command.PAUSE:
                    text += "; operations already started run to their end"
                events.append(
                    conn,
                    at=now,
                    actor=actor,
                    node_id=None,
                    operation=f"rollout-{DONE[command]}",
                    reason=text,
                )
            if command is Command.RESUME:
                for wake in self.on_created:
                    wake()
            return self.get(rollout_id)
        raise RuleViolation(
            "concurrent-change",
            f"Rollout {rollout_id} was changed by another controller at the same time; try again.",
        )


def _chosen_ids(conn: Any, node_ids: Sequence[int]) -> list[int]:
    if not node_ids:
        raise InvalidInput.one(("body", "node_ids"), "choose at least one node")
    if len(node_ids) > rules.MAX_NODES:
        raise InvalidInput.one(
            ("body", "node_ids"), f"at most {rules.MAX_NODES} nodes in one rollout"
        )
    chosen = list(dict.fromkeys(node_ids))
    bad = [n for n in chosen if not 0 < n <= 2**31 - 1]
    known = node_rows.brief(conn, [n for n in chosen if n not in bad])
    missing = [n for n in chosen if n not in known]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise InvalidInput.one(("body", "node_ids"), f"no such node: {shown}")
    return chosen


def _load(conn: Any, rollout_id: int) -> RolloutRow:
    rollout = rows.get(conn, rollout_id) if 0 < rollout_id <= 2**31 - 1 else None
    if rollout is None:
        raise NotFound(f"Rollout {rollout_id} does not exist.")
    return rollout


def view_of(rollout: RolloutRow, members: list[MemberRow]) -> RolloutView:
    ms = [m.member for m in members]
    open_batches = [m.batch for m in ms if m.outcome in rules.OPEN]
    return RolloutView(
        rollout=rollout,
        counts=rules.count(m.outcome for m in ms),
        batches=rules.batches(ms),
        current_batch=min(open_batches) if open_batches else None,
        members=members,
    )


def _batch_positions(conn: Any, rollout_ids: list[int]) -> dict[int, tuple[int, int | None]]:
    """Rollout id -> (batches in all, current batch)."""
    result: dict[int, tuple[int, int | None]] = {}
    for rollout_id in rollout_ids:
        result[rollout_id] = rows.batch_position(conn, rollout_id)
    return result


def _ids_in(text: str, *, at_most: int) -> list[int]:
    found: list[int] = []
    for part in text.split(",")[:at_most]:
        part = part.strip()
        if part.isascii() and part.isdigit() and 0 < len(part) <= 10 and int(part) <= 2**31 - 1:
            found.append(int(part))
    return found
