"""Where a sweep's cells run: in this process one after the other (:class:`SerialExecutor`), or as
Ray tasks on a local Ray over every core or on an existing Ray cluster (:class:`RayExecutor`).
Each executor prepares every task with pending cells, reports each new LaRa ranking through
``on_ranking`` and yields each finished cell as it finishes."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import ray

from medyate_mcu.errors import MedyateError
from medyate_mcu.experiments.cells import Cell, PreparedTask, RunResult, SweepConfig, run_cell
from medyate_mcu.experiments.prepare import TaskInputs, prepare_task
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.lara import LayerRanking
from medyate_mcu.method.policies import Policy
from medyate_mcu.planning.memory import Backbone

START_TIMEOUT = 60.0  # seconds for Ray to start or connect before giving up
CONNECT_TIMEOUT = 5.0  # seconds for a cluster's address to accept a TCP connection


@dataclass(frozen=True)
class TaskJob:
    """A task's inputs and its cells still to compute."""

    inputs: TaskInputs
    cells: tuple[Cell, ...]


OnRanking = Callable[[TaskJob, LayerRanking], None]


class Executor(Protocol):
    """Runs the cells of ``jobs``; ``threads`` is each cell's thread count (part of the key).
    ``session()`` spans the computing of a sweep's cells (entered only when some are not
    cached): an executor may start its workers there and stops them when it ends."""

    @property
    def threads(self) -> int: ...

    def session(self) -> AbstractContextManager[None]: ...

    def run(self, graph: Graph, config: SweepConfig, jobs: Sequence[TaskJob],
            on_ranking: OnRanking) -> Iterator[tuple[Cell, RunResult]]: ...


@dataclass(frozen=True)
class SerialExecutor:
    """Every task and cell in this process, in the canonical order (for debugging)."""

    threads: int = 1

    def session(self) -> AbstractContextManager[None]:
        return nullcontext()

    def run(self, graph: Graph, config: SweepConfig, jobs: Sequence[TaskJob],
            on_ranking: OnRanking) -> Iterator[tuple[Cell, RunResult]]:
        for job in jobs:
            prepared = prepare_task(graph, config, job.inputs, self.threads)
            on_ranking(job, prepared.ranking)
            for cell in job.cells:
                yield cell, run_cell(prepared, cell, config, self.threads)


def _prepare(graph: Graph, config: SweepConfig, inputs: TaskInputs,
             threads: int) -> tuple[LayerRanking, PreparedTask]:
    prepared = prepare_task(graph, config, inputs, threads)
    return prepared.ranking, prepared


def _warm_up() -> None:
    """Nothing: a worker running it has imported this module, hence torch and the trainer."""


_prepare_remote = ray.remote(_prepare)
_cell_remote = ray.remote(run_cell)
_warm_up_remote = ray.remote(num_cpus=1)(_warm_up)


class RayExecutor:
    """Cells as Ray tasks of ``threads_per_cell`` CPUs each. ``address`` (or ``RAY_ADDRESS``):
    join that cluster; neither: start a local Ray on ``cpus`` cores (default: every core), shut
    down when the sweep ends, however it ends."""

    def __init__(self, address: str | None = None, cpus: int | None = None,
                 threads_per_cell: int = 1) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus = cpus
        self.threads_per_cell = threads_per_cell
        self._session: _RaySession | None = None

    @property
    def threads(self) -> int:
        return self.threads_per_cell

    @contextmanager
    def session(self) -> Iterator[None]:
        """Ray starts (or is joined) in the background while the driver prepares the first
        tasks, and its workers import the trainer; Ray is shut down at the end if this session
        started it."""
        if not ray.is_initialized():
            self._begin()
        try:
            yield
        finally:
            if self._session is not None:
                self._disconnect()

    def run(self, graph: Graph, config: SweepConfig, jobs: Sequence[TaskJob],
            on_ranking: OnRanking) -> Iterator[tuple[Cell, RunResult]]:
        if not jobs:
            return
        with nullcontext() if self._session is not None or ray.is_initialized() \
                else self.session():
            starting = self._session is not None and not self._session.ready.is_set()
            local = _LocalPreparation(graph, config, jobs, self.threads_per_cell)
            if starting:  # the driver prepares tasks while Ray starts, instead of waiting
                local.start()
            try:
                self._wait()
            finally:
                local.stop()
            yield from self._run(graph, config, jobs, on_ranking, local)

    def _run(self, graph: Graph, config: SweepConfig, jobs: Sequence[TaskJob],
             on_ranking: OnRanking, local: _LocalPreparation
             ) -> Iterator[tuple[Cell, RunResult]]:
        threads = self.threads_per_cell
        graph_ref = ray.put(graph)
        pending: dict[Any, TaskJob | Cell] = {}

        def submit_cells(job: TaskJob, prepared: Any) -> None:
            for cell in sorted(job.cells, key=_cost):  # the slowest first: no lone tail
                pending[_cell_remote.options(num_cpus=threads).remote(
                    prepared, cell, config, threads)] = cell

        for job in jobs[local.claimed:]:  # each preparation in parallel, then its cells
            ranking, prepared = _prepare_remote.options(num_cpus=threads, num_returns=2).remote(
                graph_ref, config, ray.put(job.inputs), threads)
            pending[ranking] = job
            submit_cells(job, prepared)
        for job, prepared in zip(jobs, local.results(), strict=False):  # the driver's
            on_ranking(job, prepared.ranking)
            submit_cells(job, ray.put(prepared))
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            what = pending.pop(ref)
            if isinstance(what, TaskJob):
                on_ranking(what, _get(ref))
            else:
                yield what, _get(ref)

    def _begin(self) -> None:
        """Start or join Ray in a thread of its own (:class:`_RaySession`)."""
        if self.address:
            _check_reachable(self.address)
            options: dict[str, Any] = {"address": self.address}
        else:
            options = {"address": "local", "num_cpus": self.cpus or os.cpu_count() or 1,
                       "include_dashboard": False}  # "local": never another user's Ray
        self._session = _RaySession(options)
        self._session.start()

    def _wait(self) -> None:
        """Wait for the session's start (at most :data:`START_TIMEOUT`); one line if it failed."""
        if self._session is None:  # an existing Ray of the caller's
            return
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
        failure = self._session.outcome()
        if failure is not None:
            raise MedyateError(f"could not start or join {where}: {failure}")

    def _disconnect(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if session.ready.is_set():  # a start still hanging is left to its daemon thread
            ray.shutdown()
        session.stop()


class _RaySession(threading.Thread):
    """Calls ``ray.init`` in a daemon thread that lives until :meth:`stop`: a hung start is
    abandoned after :data:`START_TIMEOUT`, and the processes a local Ray forks (which die with
    the thread that forked them) live as long as the sweep."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(daemon=True, name="ray-session")
        self.options = options
        self.ready = threading.Event()
        self.done = threading.Event()
        self.failure: str | None = None
        self.warm_up: list[Any] = []  # a task per CPU: the workers import the trainer early

    def outcome(self) -> str | None:
        """None once Ray runs, else why not (one line), waiting at most :data:`START_TIMEOUT`."""
        if not self.ready.wait(START_TIMEOUT):
            return f"no answer within {START_TIMEOUT:.0f} s"
        return self.failure

    def run(self) -> None:
        try:
            ray.init(**self.options, log_to_driver=False, logging_level=logging.ERROR)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.warm_up = [_warm_up_remote.remote() for _ in range(cpus)]  # imports, now
        except Exception as exc:  # reported by outcome()
            self.failure = _first_line(exc)
            if "InvalidAuthToken" in str(exc.__cause__ or ""):
                self.failure += (" (the cluster wants its authentication token: set "
                                 "RAY_AUTH_MODE=token, with the cluster's token in "
                                 "~/.ray/auth_token or RAY_AUTH_TOKEN)")
            elif exc.__cause__:
                self.failure += f" ({_first_line(exc.__cause__)})"
        self.ready.set()
        if self.failure is None:
            self.done.wait()

    def stop(self) -> None:
        self.done.set()


class _LocalPreparation(threading.Thread):
    """Prepares the first tasks in the driver while Ray starts: the ``claimed`` first ones,
    each begun before :meth:`stop` (the thread's threads pinned as on a worker: same bits)."""

    def __init__(self, graph: Graph, config: SweepConfig, jobs: Sequence[TaskJob],
                 threads: int) -> None:
        super().__init__(daemon=True, name="prepare-while-ray-starts")
        self.graph, self.config, self.jobs, self.threads = graph, config, jobs, threads
        self.claimed = 0
        self.prepared: list[PreparedTask] = []
        self.failure: BaseException | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def run(self) -> None:
        try:
            while self._claim():
                job = self.jobs[self.claimed - 1]
                self.prepared.append(prepare_task(self.graph, self.config, job.inputs,
                                                  self.threads))
        except BaseException as exc:  # re-raised by results()
            self.failure = exc

    def _claim(self) -> bool:
        with self._lock:
            if self._stopped or self.claimed == len(self.jobs):
                return False
            self.claimed += 1
            return True

    def stop(self) -> None:
        """No task is begun after this; the one under way finishes."""
        with self._lock:
            self._stopped = True

    def results(self) -> list[PreparedTask]:
        """The claimed tasks, prepared (waits for the last one)."""
        if self.is_alive():
            self.join()
        if self.failure is not None:
            raise self.failure
        return self.prepared


def _cost(cell: Cell) -> int:
    """Sort key submitting the slowest cells first: int8 ones (the numpy integer reference, up
    to 20x a float32 cell), then full fine-tuning (every layer), then the conv-training
    policies, the classifier alone last (half their time: the cores idle at most that long
    while the last cell finishes)."""
    if cell.backbone == Backbone.INT8.value:
        return 0
    if cell.policy == Policy.FULL.value:
        return 1
    return 3 if cell.policy == Policy.CLASSIFIER.value else 2


def _get(ref: Any) -> Any:
    """A task's value; its exception as raised in the task (not Ray's traceback text), or a
    one-line MedyateError for Ray's own failures (a worker killed, out of memory, ...)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, Exception):
            raise error.cause from None
        raise MedyateError(f"a sweep task failed on Ray: {_first_line(error)}") from None
    except ray.exceptions.RayError as error:
        raise MedyateError(f"a sweep task failed on Ray: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of retries, if ``host:port`` takes no
    connection (other forms, e.g. "auto", are left to Ray)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise MedyateError(f"no Ray cluster at {address} ({exc.strerror or exc}); start one "
                           "with `ray start --head` or give its address") from None
