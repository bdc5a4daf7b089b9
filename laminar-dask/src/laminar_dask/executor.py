"""``dask`` — run each layer split as one task on a Dask distributed cluster.

``Dask(address="tcp://host:8786")`` (or ``executor="dask://host:8786"``, or
``LAMINAR_EXECUTOR=dask://host:8786``) connects to a running scheduler; ``Dask()`` / ``"dask://"``
starts a :class:`distributed.LocalCluster` of worker processes when the execution starts and closes
it when the execution ends.

How a split travels:

* The flow is pickled once per execution and installed on every worker (and on workers that join
  later, e.g. one the nanny restarted) by a worker plugin; each Dask task then carries only the
  small :class:`~laminar.plugins.SplitTask`. Workers unpickle the flow once and reuse it.
* Splits the scheduler hands over in one turn of the event loop (a layer's splits start together)
  go to Dask as one graph (``client.map``), not one graph update per split.
* Each task runs :func:`laminar.plugins.run_split` and is submitted with ``retries=0``:
  Laminar's ``Retry`` decides retries. A worker that dies mid-task makes Dask raise
  :class:`distributed.KilledWorker`, which becomes :class:`laminar.errors.WorkerLost`.
* ``Container(cpu, memory)`` becomes Dask worker ``resources`` only for the resource names the
  cluster's workers declare (``dask worker --resources "cpu=4,memory=16000"``).
* When the scheduler gives up on a split (``timeout``) its Dask future is cancelled.
* When the run fails or is stopped (``cancel_queued``), every worker is told (``client.run``): tasks
  of the run still queued there, and the splits of a batch not started yet, do not start.
* The worker processes of a LocalCluster it started ignore SIGINT: Ctrl-C (the terminal's SIGINT to
  the whole job) is the scheduler's to act on, and the running splits finish, as on every executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from laminar.errors import ConfigurationError, WorkerLost
from laminar.plugins import Executor, FlowPacker, SplitNotStarted, without_flow

if TYPE_CHECKING:
    from distributed import Client
    from laminar.plugins import FlowDefinition, SplitOutcome, SplitTask

# dask and distributed are imported when an execution starts, not when Laminar loads its plugins:
# importing distributed takes about a second, and every Laminar process loads every plugin.

#: Splits in flight when ``concurrency`` is not given. The cluster's threads bound what actually runs;
#: this only bounds what Laminar hands to the Dask scheduler at once, so it is generous.
DEFAULT_CONCURRENCY = 1024

#: Seconds between the first split of a batch finishing and the batch's results being fetched.
GATHER_WINDOW = 0.005

#: Resource names ``Container`` fields map to, when the cluster's workers declare them.
RESOURCES = ("cpu", "memory")


class Dask(Executor):
    """Runs each layer split as one task on a Dask cluster.

    ``address`` is a Dask scheduler address (``"tcp://host:8786"``, ``"host:8786"``,
    ``"tls://host:8786"``); ``None`` starts a ``LocalCluster`` of worker processes for each execution,
    sized by ``n_workers`` and ``threads_per_worker`` (Dask's defaults when ``None``), with any other
    ``LocalCluster`` keyword arguments in ``cluster_options``. ``concurrency`` caps splits handed to
    Dask at once (default 1024; the cluster's threads decide how many actually run). ``timeout`` caps
    one split's seconds; the split's Dask future is then cancelled.
    """

    names: ClassVar[tuple[str, ...]] = ("dask",)
    in_process: ClassVar[bool] = False
    #: A Dask task costs the scheduler about a millisecond: short splits go in batches of about this.
    batch_seconds = 0.1

    def __init__(
        self,
        address: str | None = None,
        *,
        concurrency: int | None = None,
        timeout: float | None = None,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        cluster_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            concurrency=DEFAULT_CONCURRENCY if concurrency is None else concurrency, timeout=timeout
        )
        self.address = _normalize(address)
        for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(
                    f"Dask({name}=...) must be a whole number of at least 1, got {value!r}"
                )
        if self.address is not None and (n_workers or threads_per_worker or cluster_options):
            raise ConfigurationError(
                "Dask(n_workers=..., threads_per_worker=..., cluster_options=...) size the LocalCluster "
                f"started when no address is given; with address={self.address!r} the cluster is sized by "
                "whoever started it"
            )
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.cluster_options = dict(cluster_options or {})
        self._reset()

    def _reset(self) -> None:
        self._client: Any = None  # distributed.Client
        self._cluster: Any = None  # distributed.LocalCluster
        self._declared: dict[str, float] = {}
        self._threads = 0  # the cluster's worker threads, as the execution started
        self._packer = FlowPacker()
        self._installed: dict[str, asyncio.Future[Any]] = {}  # flow token -> plugin registration
        self._pending: list[_Submission] = []
        self._fetching: list[tuple[Any, asyncio.Future[SplitOutcome | None]]] = []
        self._gathering: set[asyncio.Future[None]] = set()
        self._keys = itertools.count()
        self._run = uuid.uuid4().hex[:8]
        self._stopped = False
        self._stopping: asyncio.Future[Any] | None = None

    @property
    def batch_window(self) -> int:
        """Two batches per thread of the cluster's workers when the execution started (a Dask task
        each), at most ``concurrency``: more would only queue on the Dask scheduler."""
        return max(1, min(self.concurrency, 2 * self._threads)) if self._threads else self.concurrency

    @classmethod
    def from_url(cls, url: str) -> Dask:
        """``dask://host:8786`` connects to that scheduler; ``dask://`` (or ``dask``) starts a LocalCluster.

        Query parameters set the keyword arguments: ``dask://?n_workers=4&threads_per_worker=1``,
        ``dask://host:8786?concurrency=64&timeout=600``.
        """
        parts = urlsplit(url if "://" in url else f"{url}://")
        if parts.scheme.lower() != "dask":
            raise ConfigurationError(f"a Dask executor URL starts with dask://, got {url!r}")
        if parts.path not in ("", "/"):
            raise ConfigurationError(
                f"Dask executor URL {url!r} has a path; write dask://host:port (a scheduler) or dask:// "
                "(a LocalCluster)"
            )
        options: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in ("concurrency", "timeout", "n_workers", "threads_per_worker"):
                raise ConfigurationError(
                    f"Dask executor URL {url!r}: unknown option {name!r}; known: concurrency, timeout, "
                    "n_workers, threads_per_worker"
                )
            try:
                options[name] = float(value) if name == "timeout" else int(value)
            except ValueError as error:
                raise ConfigurationError(
                    f"Dask executor URL {url!r}: {name}={value!r} is not a number"
                ) from error
        return cls(parts.netloc or None, **options)

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._reset()
        try:
            if self.address is None:
                options: dict[str, Any] = {
                    "processes": True,
                    "dashboard_address": ":0",
                    **self.cluster_options,
                }
                if self.n_workers is not None:
                    options["n_workers"] = self.n_workers
                if self.threads_per_worker is not None:
                    options["threads_per_worker"] = self.threads_per_worker
                # A task whose worker dies is failed at once (KilledWorker -> WorkerLost) and Laminar's
                # Retry decides, rather than Dask re-running it on other workers first.
                with _dask().config.set({"distributed.scheduler.allowed-failures": 0}):
                    self._cluster = await _distributed().LocalCluster(asynchronous=True, **options)
                self._client = await _distributed().Client(
                    self._cluster, asynchronous=True, set_as_default=False
                )
                from laminar_dask.worker import TerminalSignals, origin

                # Ctrl-C reaches these workers too (the terminal's job): the scheduler decides.
                await self._client.register_plugin(TerminalSignals(origin()), name="laminar-terminal-signals")
            else:
                try:
                    self._client = await _distributed().Client(
                        self.address, asynchronous=True, set_as_default=False
                    )
                except OSError as error:
                    raise ConfigurationError(
                        f"cannot reach the Dask scheduler at {self.address}: {error}. Start one (dask "
                        "scheduler; dask worker ADDRESS), or use Dask() / dask:// to start a LocalCluster"
                    ) from error
            await self._refresh_resources()
        except BaseException:
            await self.stop()  # the scheduler calls stop() only after a successful start()
            raise

    async def stop(self) -> None:
        client, cluster, installed = self._client, self._cluster, self._installed
        if self._stopping is not None:
            with contextlib.suppress(Exception):  # best effort: the workers may be gone
                await self._stopping
        self._reset()
        try:
            if client is not None and client.status == "running":
                for token, registered in installed.items():
                    if registered.done() and registered.exception() is None:
                        with contextlib.suppress(Exception):  # best effort: the cluster may be gone
                            await client.unregister_worker_plugin(_plugin_name(token))
        finally:
            try:
                if client is not None:
                    await client.close()
            finally:
                if cluster is not None:
                    await cluster.close()

    @property
    def client(self) -> Client:
        """The Dask client of the running execution."""
        client: Client = self._running()
        return client

    def _running(self) -> Any:
        if self._client is None:
            raise RuntimeError("the Dask executor is not started; it runs inside Flow.__call__")
        return self._client

    # ---- splits -----------------------------------------------------------------------------
    async def run(self, task: SplitTask) -> SplitOutcome:
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        index = "" if task.index is None else f"-{task.index}"
        if self._stopped:
            raise SplitNotStarted.of(task)
        try:
            outcome: SplitOutcome | SplitNotStarted = await self._run_task(
                task, f"{task.layer}{index}-attempt-{task.attempt}", without_flow(task)
            )
        except KilledWorker as error:
            raise WorkerLost(
                f"the Dask worker running {task.describe()} died before it finished ({error})"
            ) from error
        except FutureCancelledError as error:
            raise WorkerLost(
                f"Dask cancelled the task running {task.describe()} ({error}); its worker or the scheduler "
                "may have restarted"
            ) from error
        if isinstance(outcome, SplitNotStarted):
            raise outcome
        return outcome

    async def run_batch(self, tasks: Sequence[SplitTask]) -> list[SplitOutcome | BaseException | None]:
        """The batch is one Dask task: its splits run one after another on one worker. If that
        worker dies, none of the batch's splits is known to have finished: each is handed over
        again (``None``), on its own."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        if self._stopped:
            return [SplitNotStarted.of(task) for task in tasks]
        first = tasks[0]  # a batch's splits share their layer's flow and Container
        try:
            results: list[SplitOutcome | BaseException | None] = await self._run_task(
                first, f"{first.layer}-batch-{first.index}-{len(tasks)}", [without_flow(t) for t in tasks]
            )
        except (KilledWorker, FutureCancelledError):
            return [None] * len(tasks)
        return results

    def cancel_queued(self) -> None:
        """Tell every worker that this run's tasks still queued there, and the splits of a batch not
        started yet, must not start (``laminar_dask.worker.stop_run``); hand Dask nothing more."""
        if self._stopped or self._client is None:
            self._stopped = True
            return
        from laminar_dask.worker import stop_run

        self._stopped = True
        self._stopping = asyncio.ensure_future(self._client.run(stop_run, self._run))

    async def _run_task(self, task: SplitTask, name: str, payload: SplitTask | list[SplitTask]) -> Any:
        """Submit ``payload`` (one split, or a batch) as one Dask task and return its result; the
        Dask task is cancelled if this is (a timeout, or the run abandoned)."""
        token = await self._install(task.flow)
        submission = _Submission(
            key=f"laminar-{name}-{self._run}-{next(self._keys)}",
            token=token,
            run=self._run,
            task=payload,  # the worker holds the flow
            resources=await self._resources(task),
            future=asyncio.get_running_loop().create_future(),
        )
        self._submit(submission)
        future: Any = None
        try:
            future = await submission.future
            return await self._outcome(future)
        except asyncio.CancelledError:
            if future is None and submission.future.done() and not submission.future.cancelled():
                future = submission.future.result()  # submitted in the same turn it was cancelled
            if future is not None:
                with contextlib.suppress(Exception):  # best effort
                    await asyncio.shield(self._running().cancel([future], force=True))
            raise

    async def _outcome(self, future: Any) -> SplitOutcome:
        """The split's outcome: results of splits that finish close together are fetched together.

        Awaiting a Dask future fetches its result in a round trip of its own (client, scheduler,
        worker and back); a layer's splits finish a few milliseconds apart, so their results are
        gathered in batches instead, ``GATHER_WINDOW`` seconds after the first of a batch finished.
        """
        completion = _completion()
        if completion is None:  # a distributed without the helper: one round trip per split
            direct: SplitOutcome = await future
            return direct
        await completion([future])
        if future.status != "finished":
            failed: SplitOutcome = await future  # raises the task's error, already sent to the client
            return failed
        fetched: asyncio.Future[SplitOutcome | None] = asyncio.get_running_loop().create_future()
        self._fetching.append((future, fetched))
        if len(self._fetching) == 1:
            asyncio.get_running_loop().call_later(GATHER_WINDOW, self._gather_batch)
        outcome = await fetched
        if outcome is None:  # the batch could not be gathered as a whole: fetch this one alone
            outcome = await future
        return outcome

    def _gather_batch(self) -> None:
        batch, self._fetching = self._fetching, []
        gathering = asyncio.ensure_future(self._gather(batch))
        self._gathering.add(gathering)
        gathering.add_done_callback(self._gathering.discard)

    async def _gather(self, batch: list[tuple[Any, asyncio.Future[SplitOutcome | None]]]) -> None:
        waiting = [(future, fetched) for future, fetched in batch if not fetched.done()]
        try:
            outcomes = await self._running().gather([future for future, _ in waiting])
        except BaseException:
            outcomes = [None] * len(waiting)
        for (_, fetched), outcome in zip(waiting, outcomes, strict=True):
            if not fetched.done():
                fetched.set_result(outcome)

    def _submit(self, submission: _Submission) -> None:
        """Queue ``submission``; every split queued in one turn of the event loop goes in one graph.

        The scheduler starts a layer's splits all at once, and each ``client.submit`` would be a
        graph update of its own for the Dask scheduler to process; ``client.map`` sends one.
        """
        self._pending.append(submission)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        from laminar_dask.worker import run_task

        pending, self._pending = self._pending, []
        groups: dict[tuple[tuple[str, float], ...], list[_Submission]] = {}
        for submission in pending:
            if not submission.future.done():  # not cancelled while it waited for this turn
                groups.setdefault(tuple(sorted((submission.resources or {}).items())), []).append(submission)
        for resources, group in groups.items():
            try:
                futures = self._running().map(
                    run_task,
                    [submission.token for submission in group],
                    [submission.run for submission in group],
                    [submission.task for submission in group],
                    key=[submission.key for submission in group],
                    pure=False,
                    retries=0,
                    resources=dict(resources) or None,
                )
            except Exception as error:
                for submission in group:
                    submission.future.set_exception(error)
                continue
            for submission, future in zip(group, futures, strict=True):
                submission.future.set_result(future)

    async def _install(self, flow: FlowDefinition) -> str:
        """Pickle ``flow`` once and install it on every worker; return its token."""
        packed = self._packer.pack(flow)
        registered = self._installed.get(packed.token)
        if registered is None:
            from laminar_dask.worker import FlowPlugin, origin

            plugin = FlowPlugin(packed.token, packed.payload, origin())
            registered = self._installed[packed.token] = asyncio.ensure_future(
                self._running().register_plugin(plugin, name=_plugin_name(packed.token))
            )
        try:
            await asyncio.shield(registered)
        except Exception as error:
            raise ConfigurationError(
                f"could not install flow {flow.name} on the Dask workers: {type(error).__name__}: {error}. "
                "Every worker needs laminar-core, laminar-dask, the datastore's backend and the packages "
                "the flow imports, in versions that match this process"
            ) from error
        return packed.token

    async def _refresh_resources(self) -> None:
        identity = await self._running().scheduler.identity(n_workers=-1)
        declared: dict[str, float] = {}
        self._threads = sum(
            int(worker.get("nthreads") or 0) for worker in identity.get("workers", {}).values()
        )
        for worker in identity.get("workers", {}).values():
            for name, amount in (worker.get("resources") or {}).items():
                declared[name] = max(declared.get(name, 0), amount)
        self._declared = declared

    async def _resources(self, task: SplitTask) -> dict[str, float] | None:
        """``Container(cpu, memory)`` as Dask resources, for the names the cluster's workers declare."""
        if not any(name in self._declared for name in RESOURCES):
            return None
        configuration = task.configuration or task.flow.registry[task.layer].configuration
        container = configuration.container
        wanted = {name: getattr(container, name) for name in RESOURCES if name in self._declared}
        wanted = {name: amount for name, amount in wanted.items() if amount and amount > 0}
        short = {name: amount for name, amount in wanted.items() if amount > self._declared[name]}
        if short:
            await self._refresh_resources()  # workers may have joined since the execution started
            short = {name: amount for name, amount in short.items() if amount > self._declared.get(name, 0)}
        if short:
            needs = ", ".join(
                f"{name}={amount} (the largest worker declares {self._declared.get(name, 0)})"
                for name, amount in short.items()
            )
            raise ConfigurationError(
                f"{task.describe()} asks for Container {needs}; no worker of the Dask cluster could ever run "
                "it. Lower the layer's Container, or add workers with more resources "
                "(dask worker --resources ...)"
            )
        return wanted or None

    # ---- pickling: the executor travels with the flow; the client and cluster do not -------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "address": self.address,
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "cluster_options": self.cluster_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __repr__(self) -> str:
        where = repr(self.address) if self.address is not None else "None (LocalCluster)"
        return f"Dask(address={where}, concurrency={self.concurrency}, timeout={self.timeout})"


@dataclasses.dataclass
class _Submission:
    """One split waiting for the next batch of Dask submissions; ``future`` gets its Dask future."""

    key: str
    token: str
    run: str
    task: SplitTask | list[SplitTask]  # a list: a batch of splits in one task
    resources: dict[str, float] | None
    future: asyncio.Future[Any]


def _completion() -> Any:
    """distributed's coroutine that waits for futures to finish without fetching their results."""
    try:
        from distributed.client import _wait
    except ImportError:  # pragma: no cover - a private helper; fall back to awaiting each future
        return None
    return _wait


def _dask() -> Any:
    import dask
    import distributed  # noqa: F401 - registers the distributed.* configuration defaults

    return dask


def _distributed() -> Any:
    """distributed, typed loosely: its client and cluster coroutines are not fully annotated."""
    import distributed

    return distributed


def _plugin_name(token: str) -> str:
    return f"laminar-flow-{token}"


def _normalize(address: str | None) -> str | None:
    """``host:8786`` -> ``tcp://host:8786``; ``dask://host:8786`` -> ``tcp://host:8786``; ``""`` -> None."""
    if address is None:
        return None
    if not isinstance(address, str):
        raise ConfigurationError(f"Dask(address=...) takes a scheduler address string, got {address!r}")
    address = address.strip()
    if address.lower().startswith("dask://"):
        address = address[len("dask://") :].rstrip("/")
    if not address:
        return None
    if "://" not in address:
        address = f"tcp://{address}"
    return address
