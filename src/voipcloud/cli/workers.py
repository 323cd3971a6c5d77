"""`voipcloud serve --workers N`: N serving processes behind one address, on one PostgreSQL.

One process holds at most as many sockets as its open-files limit allows (20,000 on the
reference machine, not raisable), and one Python process runs on one core at a time (the
GIL). `--workers N` starts N worker processes that each bind the same host:port with
`SO_REUSEPORT`: the kernel spreads new connections (agents, browsers, API clients) across
them by a hash of the connection's addresses. Each worker is a whole controller of the
cluster (`services/cluster.py`): the same database, LISTEN/NOTIFY between them, each
periodic duty held by one of them through its advisory lock. Nothing new is coordinated
here; what must happen once is done by this parent before any worker starts:

- the data dir's lock (`instance_lock`), passed on to every worker, so the data dir stays
  locked while any of them lives (a restore never runs under an orphan);
- the TLS files (our CA and server certificate are created once; the workers load them, and
  a renewal is serialised by the TLS directory's own lock);
- the key check, the migrations and the first-start work (under the cluster's first-start
  lock, so a worker starting later finds them done), and the generated admin password
  printed once;
- the IC node's agent, in a process of its own (forked, supervised, never given up on): it
  connects through the shared port to whichever worker the kernel picks (one IC agent, as
  the cluster needs).

The workers are forked from this parent (`multiprocessing`'s fork), after it imported the
application and ran the start-up work, then let go of its database connections and froze
what it holds (`gc.freeze`): the interpreter's and the application's start-up pages are
shared copy-on-write by the parent and every worker instead of built once each (a worker's
PSS before its first connection: 54-57 MiB, against about 120 MiB when each worker imported
the application itself; docs/benchmarks.md).
A fork is safe only from a process with one thread: the parent never starts a thread, and the
IC node's agent runs in a process of its own, forked and supervised like a worker.

The parent then supervises: it prints each worker's pid, forwards SIGTERM/SIGINT to the
workers and waits for them (SIGKILL after `STOP_SECONDS`), starts a worker that died again
after a backoff (`Restarts`), and gives up (exit 1, every worker stopped) when one keeps dying
before it is ready. A worker dies with its parent (`PR_SET_PDEATHSIG`).

SQLite is refused above one worker (`sqlite_refusal`): one writer at a time, and no way for
one process to tell the others of a change (no LISTEN/NOTIFY, no advisory locks), so N
processes would queue behind each other's writes, run every duty N times and never wake
each other's agent channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn

from voipcloud.api import server
from voipcloud.config import Settings

log = logging.getLogger("voipcloud.workers")

STOP_SECONDS = 30.0  # a graceful stop of every worker, then SIGKILL
TICK_SECONDS = 0.2  # how often the parent looks at its workers
PR_SET_PDEATHSIG = 1
IC_AGENT = 0  # the slot of the IC node's agent


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first_delay: float = 0.5  # the first restart after a death
    max_delay: float = 30.0  # doubling up to this
    stable_after: float = 30.0  # ready this long: the next death counts as the first again
    give_up_after: int = 5  # deaths in a row before ready: the parent stops (exit 1)


class Restarts:
    """When one worker slot starts its process again after a death, or that it gives up.

    A worker that died before it was ready (could not bind, could not import, the lifespan
    failed) counts towards giving up; one that was ready resets that count. Delays double
    with every death in a row and return to the first after a run of `stable_after`."""

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.deaths = 0  # in a row, for the delay
        self.start_failures = 0  # in a row, before ready

    def died(self, *, was_ready: bool, ready_for: float) -> float | None:
        """The delay before the next start, or None: give up."""
        policy = self.policy
        if was_ready:
            self.start_failures = 0
            if ready_for >= policy.stable_after:
                self.deaths = 0
        else:
            self.start_failures += 1
            if self.start_failures >= policy.give_up_after:
                return None
        delay = min(policy.max_delay, policy.first_delay * float(2**self.deaths))
        self.deaths += 1
        return delay


def sqlite_refusal(settings: Settings) -> str | None:
    """Why these settings cannot run several workers (None: they can)."""
    if settings.workers <= 1:
        return None
    url = settings.resolved_database_url()
    if url.startswith("postgresql"):
        return None
    return (
        f"--workers {settings.workers} needs PostgreSQL (--database-url / "
        "VOIPCLOUD_DATABASE_URL): SQLite, the embedded default, has one writer at a time and "
        "no way to tell other processes of a change (no LISTEN/NOTIFY, no advisory locks), so "
        "several processes would queue on each other's writes, run every periodic duty once "
        "each and miss each other's changes; with SQLite run one process (--workers 1)"
    )


# --- the sockets ---------------------------------------------------------------------------


def reuse_port_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) SO_REUSEPORT sockets for host:port, one per address it
    resolves to. The kernel gives a socket connections only once it listens, which uvicorn
    does after the worker's start-up: a starting worker takes nobody's connections."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in found:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def port_taken(host: str, port: int) -> OSError | None:
    """Whether something else listens on host:port already (with SO_REUSEPORT alone our
    workers would join another same-user group silently instead of failing as `serve` does)."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _name, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc
    return None


# --- the parent ----------------------------------------------------------------------------


class WorkerProcess:
    """A forked child, seen as the parent needs it (the calls of `subprocess.Popen` used here;
    `exitcode`: the code, or minus the signal that killed it)."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self.pid: int = process.pid or 0

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout or 0.0)
        return code


@dataclass
class Slot:
    """One child's place (a worker, or the IC node's agent: index 0): its current process and
    its restart history."""

    index: int
    restarts: Restarts
    process: WorkerProcess | None = None
    ready_pipe: int | None = None  # read end: the worker writes once it listens
    started: float = 0.0
    ready_at: float | None = None
    start_at: float | None = None  # a restart waiting for its backoff
    pids: list[int] = field(default_factory=list)  # every process this slot ran

    @property
    def name(self) -> str:
        return "ic agent" if self.index == IC_AGENT else f"worker {self.index}"


class Supervisor:
    """Starts, watches, restarts and stops the worker processes (the parent's main loop)."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: RestartPolicy | None = None,
        stop_seconds: float = STOP_SECONDS,
        metrics_dir: str | None = None,
        ic_agent: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir  # the workers' shared /metrics files (services/metrics)
        self.slots = [Slot(i + 1, Restarts(policy)) for i in range(settings.workers)]
        self.ic_agent = ic_agent  # runs in a child of its own, started again whenever it ends
        if ic_agent is not None:
            self.slots.append(Slot(IC_AGENT, Restarts(policy)))
        self.stop_seconds = stop_seconds
        self.stopping = 0  # signals received
        self.selector = selectors.DefaultSelector()
        self.context = multiprocessing.get_context("fork")
        self.parent = os.getpid()

    # signals: the first stops the workers gracefully, a second hurries them
    def _signalled(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping += 1
        if self.stopping > 1:
            self._signal_all(signal.SIGINT)  # uvicorn: a second signal forces its exit

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._signalled)
        signal.signal(signal.SIGINT, self._signalled)

    def spawn(self, slot: Slot) -> None:
        if threading.active_count() > 1:  # a fork copies no thread but the caller's
            log.warning("forking with %d threads alive", threading.active_count())
        read_end: int | None = None
        write_end: int | None = None
        if slot.index != IC_AGENT:  # a fork inherits the descriptors: a plain pipe
            read_end, write_end = os.pipe()
        process = self.context.Process(
            target=self._child,
            args=(slot, read_end, write_end),
            name=f"voipcloud-{slot.name.replace(' ', '-')}",
        )
        try:
            process.start()
        finally:
            if write_end is not None:
                os.close(write_end)
        worker = WorkerProcess(process)
        slot.process = worker
        slot.ready_pipe = read_end
        slot.started = time.monotonic()
        slot.ready_at = slot.started if read_end is None else None  # an agent: at once
        slot.start_at = None
        slot.pids.append(worker.pid)
        if read_end is not None:
            self.selector.register(read_end, selectors.EVENT_READ, slot)
        _say(f"{slot.name} started: pid {worker.pid}")

    def _child(self, slot: Slot, read_end: int | None, ready_fd: int | None) -> None:
        """In the forked child: let go of what is the parent's, then run the slot's work."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        for other in self.slots:
            if other.ready_pipe is not None:
                os.close(other.ready_pipe)
        if read_end is not None:
            os.close(read_end)
        os.setsid()  # a terminal's Ctrl-C reaches the parent only
        _die_with_parent(self.parent)
        from voipcloud.cli import serve

        if ready_fd is None:
            assert self.ic_agent is not None
            serve.setup_logging("[ic agent] ")
            self.ic_agent()
            return
        worker_main(slot.index, self.settings, self.metrics_dir, ready_fd)

    def _close_pipe(self, slot: Slot) -> None:
        if slot.ready_pipe is not None:
            self.selector.unregister(slot.ready_pipe)
            os.close(slot.ready_pipe)
            slot.ready_pipe = None

    def _read_ready(self, timeout: float) -> None:
        for key, _events in self.selector.select(timeout):
            slot: Slot = key.data
            try:
                data = os.read(key.fd, 64)
            except OSError:
                data = b""
            if data and slot.ready_at is None and slot.process is not None:
                slot.ready_at = time.monotonic()
                _say(f"worker {slot.index} ready: pid {slot.process.pid}")
            self._close_pipe(slot)  # one message, or EOF (it died: seen by poll)

    def _reap(self) -> bool:
        """Notice dead workers and schedule their restart; False: give up."""
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            code = process.poll() if process is not None else None
            if process is None or code is None:
                continue
            self._read_ready(0)  # a ready message written just before it died
            self._close_pipe(slot)
            slot.process = None
            if self.metrics_dir is not None:  # its live gauges leave /metrics' sums
                from voipcloud.services.metrics import process_died

                process_died(self.metrics_dir, process.pid)
            ready_for = now - slot.ready_at if slot.ready_at is not None else 0.0
            delay = slot.restarts.died(was_ready=slot.ready_at is not None, ready_for=ready_for)
            what = _exit_text(code)
            if delay is None:
                log.error(
                    "%s (pid %d) %s before it was ready, %d times in a row: giving up",
                    slot.name,
                    process.pid,
                    what,
                    slot.restarts.start_failures,
                )
                return False
            uptime = now - slot.started
            log.warning(
                "%s (pid %d) %s after %.1f s%s; starting it again in %.1f s",
                slot.name,
                process.pid,
                what,
                uptime,
                "" if slot.ready_at is not None else " (before it was ready)",
                delay,
            )
            slot.start_at = now + delay
        return True

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and slot.start_at is not None and now >= slot.start_at:
                self.spawn(slot)

    def run(self) -> int:
        """Until a signal (0 after a graceful stop) or giving up (1)."""
        for slot in self.slots:
            self.spawn(slot)
        code = 0
        while not self.stopping:
            self._read_ready(TICK_SECONDS)
            if not self._reap():
                code = 1
                break
            if not self.stopping:
                self._restart_due()
        self.stop()
        return code

    def _live(self) -> list[WorkerProcess]:
        return [s.process for s in self.slots if s.process and s.process.poll() is None]

    def _signal_all(self, signum: int) -> None:
        for process in self._live():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM to every worker, wait for them; SIGKILL whoever is left after the time."""
        live = self._live()
        if live:
            _say(f"stopping the workers: pids {', '.join(str(p.pid) for p in live)}")
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        while self._live() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self._live()
        for process in left:
            log.warning(
                "worker pid %d did not stop in %.0f s: killed", process.pid, self.stop_seconds
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        for slot in self.slots:
            if slot.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    slot.process.wait(timeout=10)
            self._close_pipe(slot)
        self.selector.close()
        _say("every worker stopped")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _say(text: str) -> None:
    print(f"voipcloud: {text}", file=sys.stderr, flush=True)


def run(settings: Settings, *, with_ic_agent: bool = True) -> None:
    """`voipcloud serve --workers N` (N > 1): the parent."""
    from voipcloud.api.app import build_controller, start
    from voipcloud.cli import serve
    from voipcloud.domain.errors import DatabaseUnavailable
    from voipcloud.services import instance_lock, key_guard

    refusal = sqlite_refusal(settings)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    instance_lock.hold_for_process(settings.data_dir)  # one controller per data dir
    serve.setup_logging("[parent] ")
    taken = port_taken(settings.host, settings.port)
    if taken is not None:
        print(
            f"error: cannot listen on {settings.host}:{settings.port}: {taken.strerror or taken}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1)
    secure = serve.secure_transport(settings)  # the CA and certificate, created once here
    controller = build_controller(settings)
    key_guard.preflight(controller.ctx, settings.data_dir)  # a missing or wrong key: refused
    try:
        start(controller, settings)  # migrations and first start, once, before any worker
    except DatabaseUnavailable as exc:  # each worker serves 503 and finishes it when it can
        log.warning("database unavailable at start (%s): the workers will wait for it", exc)
    serve.announce(settings, secure)
    _say(f"{settings.workers} worker processes share this address (SO_REUSEPORT)")
    from voipcloud.services.metrics import prepare_shared_dir

    # every worker's /metrics figures, read by whichever serves a scrape; wiped at each start
    shared = prepare_shared_dir(settings.data_dir.resolve() / "metrics-workers")
    ic_agent: Callable[[], None] | None = None
    if with_ic_agent:  # one IC agent, in a child of its own, through the shared port
        agent = serve.ic_agent(settings, controller, secure)

        def ic_agent() -> None:
            asyncio.run(agent.run())

    supervisor = Supervisor(settings, metrics_dir=shared, ic_agent=ic_agent)
    supervisor.install_signals()
    # what the children inherit: no database connection (each makes its own), and what is
    # alive now frozen, so no collection writes to the pages they share with this parent
    controller.ctx.db.dispose()
    gc.collect()
    gc.freeze()
    code = supervisor.run()
    with contextlib.suppress(Exception):
        controller.ctx.db.dispose()
    if code:
        print(
            "error: a worker keeps dying before it is ready (its log is above); stopped",
            file=sys.stderr,
            flush=True,
        )
    raise SystemExit(code)


# --- a worker ------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the parent ends, however it ends (Linux); gone already: exit now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(1)


def worker_main(index: int, settings: Settings, metrics_dir: str | None, ready_fd: int) -> None:
    """One worker, in a child forked by the parent."""
    from voipcloud.cli import serve

    serve.setup_logging(f"[worker {index}] ")
    secure = serve.secure_transport(settings)  # the parent created the files: loaded here
    try:
        listeners = reuse_port_sockets(settings.host, settings.port)
    except OSError as exc:
        print(
            f"error: worker {index} cannot bind {settings.host}:{settings.port}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from None
    if metrics_dir:  # before the app makes its metrics
        from voipcloud.services.metrics import share_across_processes

        share_across_processes(metrics_dir)
    app = serve.serving_app(settings, secure)
    WorkerServer(
        server.config(app, settings, secure=secure),
        watcher=secure.watcher,
        reload_interval=settings.tls_reload_interval,
        ready_fd=ready_fd,
    ).run(sockets=listeners)


class WorkerServer(server.Server):
    """The controller's server, telling the parent once it listens."""

    def __init__(self, config: uvicorn.Config, *, ready_fd: int, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.ready_fd: int | None = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, b"ready\n")
                os.close(self.ready_fd)
            self.ready_fd = None
