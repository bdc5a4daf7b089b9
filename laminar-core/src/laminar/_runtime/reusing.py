"""What one run reuses from earlier executions (``run(reuse=True)``, incremental runs).

One run's state of it, in :class:`Reusing`: each layer's reuse key, the records and split batches
of the executions it reuses from, read ahead of the checks that need them, the index entries guessed
ahead down a chain of reused layers; and its checks, all synchronous: whether a layer is reused
whole, or a foreach's splits one by one, what a computed layer's record carries for later reuse, and
the index entries it publishes. The scheduler calls them on threads and keeps what is asynchronous
(the futures saying a layer is found reused, the writes of reused layers' records, the hooks). The
key's pure functions are :mod:`~laminar._runtime.reuse`'s; the index is
:mod:`~laminar._storage.reuse_index`'s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from laminar._runtime import fingerprint, foreach, reuse
from laminar._storage import reuse_index
from laminar._storage.records import SplitRecord
from laminar.errors import IntegrityError

if TYPE_CHECKING:
    from laminar._runtime.run import Run
    from laminar._storage.store import ExecutionStore

logger = logging.getLogger("laminar")


def _with_dependents(dependencies: Mapping[str, frozenset[str]], names: Iterable[str]) -> frozenset[str]:
    """``names`` and every layer that depends on one of them, directly or not."""
    found = set(names)
    grew = True
    while grew:
        grew = False
        for layer, needs in dependencies.items():
            if layer not in found and needs & found:
                found.add(layer)
                grew = True
    return frozenset(found)


class Reusing:
    """One run's reuse of earlier executions: its layers' keys and what it read of those executions,
    and the checks made of them. ``force`` names the layers that run regardless (and so do the
    layers depending on them); ``errors`` is the run's list of errors, read here only to stop
    checking once the run has failed. Its checks run on threads of their own: those down a chain
    (:meth:`reuse_onward`) claim their layers under ``onward_lock``."""

    def __init__(self, run: Run, *, force: Iterable[str], errors: Sequence[BaseException]) -> None:
        self.run = run
        self.execution = run.execution
        self.store: ExecutionStore = run.store
        self.resume = run.resumed
        self.flow = self.execution.flow
        self.plan = self.flow.plan
        self.errors = errors
        self.forced = _with_dependents(self.plan.dependencies, force)
        self.forced_asked = frozenset(force)
        self.keys: dict[str, tuple[str, dict[str, str]]] = {}  # each layer's key
        self.outputs: dict[str, dict[str, str]] = {}  # finished layers' values, summarised per artifact
        self.split_keys: dict[str, tuple[str, list[str]]] = {}  # foreach layers: base key, split keys
        self.sources: dict[tuple[str, str], dict[str, str]] = {}  # (execution, layer) -> its outputs
        self.prefetched: set[str] = set()  # executions this run reuses from, their records read
        self.ahead: dict[tuple[str, str], reuse_index.ReuseEntry | None] = {}  # (layer, key) -> entry
        # reuse_onward: the layers found reused, and those it claimed to check
        self.found_reused: set[str] = set()
        self.claimed: set[str] = set()
        self.onward_lock = threading.Lock()
        # (execution, layer) -> its split batches checked by reuse_index.prefetch, for usable()
        self.checked_batches: dict[tuple[str, str], reuse_index.Checked] = {}

    def look_ahead(self, parameters: SplitRecord) -> None:
        """While the run starts (its lease, records and status written), read what checking its
        first layers for reuse reads: the index entries of the layers that read the parameters
        alone (``parameters``, the Parameters layer's split, gives their keys), and the records
        and split batches of the execution the first one found names (``reuse`` would read them
        once the run started, one round trip after another). Reads only, none trusted: each layer is
        checked as before, finding what it needs read. Best effort: what fails here is read again."""
        try:
            self.outputs["Parameters"] = reuse_index.summarise({0: parameters})
            first = [
                name
                for name in self.plan.order
                if name != "Parameters"
                and self.plan.dependencies[name] <= {"Parameters"}
                and self.flow.registry[name].configuration.reuse
                and name not in self.forced
                and not self.plan.layer_hooks[(name, "entry")]
            ]
            keys = {name: reuse.key_of(self._components(name)[0]) for name in first}
            datastore = self.flow.configuration.datastore
            entries = datastore.map_parallel(
                lambda name: reuse_index.entry(datastore, self.flow.name, name, keys[name]), first
            )
            self.ahead.update(((name, keys[name]), found) for name, found in zip(first, entries, strict=True))
            for name, found in zip(first, entries, strict=True):
                if found is not None and found.execution != self.execution.id:
                    self._read_source(name, found.execution)
                    return
        except Exception as error:  # the checks read it all again and say why
            logger.debug("reading ahead for reuse failed: %s", error)

    def _read_source(self, name: str, execution: str) -> None:
        """Read at once the records and split batches of ``execution``, which ``name`` is reused
        from: its other layers are likely reused too; and the index entries of the layers after."""
        self.prefetched.add(execution)
        source = self.flow.configuration.store(self.flow.name, execution)
        # The layers keyed from records alone have their entries read while batches are.
        ahead = functools.partial(self._reuse_ahead, name, execution, held_only=True)
        found = reuse_index.prefetch(source, self.plan.dependencies, meanwhile=ahead)
        self.checked_batches.update(((execution, layer), checked) for layer, checked in found.items())
        self._reuse_ahead(name, execution)

    def reuse_onward(self, name: str) -> dict[str, tuple[int, str] | None]:
        """``reuse`` of ``name`` and, if it is reused, of each layer after it that reads it (or a
        layer checked here) and whose other upstream layers are found reused, in plan order, on this
        thread: down a chain of reused layers, whose records and entries are read ahead, each is
        checked here instead of on a thread of its own once the loop learned its upstream was
        reused (a thread hop each, figures in docs/performance.md). The layers
        checked here cannot have begun their own check: each waits for one checked here, whose
        result the loop learns with theirs. One that raises is left to check itself, and say so."""
        found = {name: self.reuse(name)}
        if found[name] is None:
            return found
        with self.onward_lock:
            self.found_reused.add(name)
        for layer in self.plan.order:
            upstream = self.plan.dependencies[layer] - {"Parameters"}
            if self.errors or not upstream & found.keys() or layer in found:
                continue
            if self.plan.layer_hooks[(layer, "entry")]:
                continue
            with self.onward_lock:
                if layer in self.claimed or not upstream <= self.found_reused:
                    continue
                self.claimed.add(layer)
            try:
                result = self.reuse(layer)
            except Exception:
                with self.onward_lock:
                    self.claimed.discard(layer)
                break
            found[layer] = result
            if result is not None:
                with self.onward_lock:
                    self.found_reused.add(layer)
        return found

    @functools.cached_property
    def _project_root(self) -> Path:
        """The flow's project folder, looked up once a run (a walk up the file system's folders)."""
        return reuse.root_of(self.flow)

    def _code(self, name: str) -> fingerprint.Fingerprint:
        """The fingerprint of ``name``'s code (computed once per flow class per process)."""
        flow = self.flow
        return fingerprint.of_layer(
            type(flow),
            flow.registry[name].layer,
            name,
            [definition.layer for definition in flow.registry.values()],
            self._project_root,
        )

    def fingerprint_ahead(self) -> None:
        """Fingerprint every layer's code (on a thread, while the run's first requests are made):
        the first reuse check then finds them done. One that fails is left to that check to raise."""
        for name in self.plan.order:
            if name != "Parameters":
                with contextlib.suppress(Exception):
                    self._code(name)

    def _components(
        self, name: str, outputs: Mapping[str, dict[str, str]] | None = None
    ) -> tuple[dict[str, str], fingerprint.Fingerprint]:
        """The parts of ``name``'s key: its code, packages, inputs, parameters, configuration;
        its inputs' values as ``outputs`` gives them (all of them) if given, else as this run has them."""
        flow = self.flow
        root = self._project_root
        code = self._code(name)
        components = {"code": code.digest, **{f"code:{part}": d for part, d in code.parts.items()}}
        components.update({f"package:{n}" if n != "python" else n: v for n, v in code.packages.items()})
        for upstream in sorted(self.plan.dependencies[name]):  # what it reads: its inputs' values
            if outputs is None and upstream not in self.outputs:
                self.outputs[upstream] = reuse.outputs(self.store, upstream)
            given = (self.outputs if outputs is None else outputs)[upstream]
            kind = "parameter:" if upstream == "Parameters" else f"input:{upstream}."
            components.update({kind + artifact: d for artifact, d in given.items()})
        configuration = flow.registry[name].configuration
        components["configuration"] = reuse.configuration_text(flow, name)
        components.update(reuse.extra_inputs(configuration.inputs, root, name))
        return components, code

    def reuse(self, name: str) -> tuple[int, str] | None:
        """Whether ``name`` can be reused from an earlier execution with its key, one that left it
        whole: its number of splits and that execution (its record is for the caller to write); else
        None (it runs), with why it runs in the run's explanations."""
        components, code = self._components(name)
        key = reuse.key_of(components)
        self.keys[name] = (key, components)
        datastore = self.flow.configuration.datastore
        if not self.flow.registry[name].configuration.reuse:
            self.run.explanations[name] = (
                None,
                "ran because the layer refuses reuse (register(reuse=False))",
            )
            return None
        if name in self.forced:
            self.run.explanations[name] = (None, f"ran because it was forced ({self._forced_by(name)})")
            return None
        if (name, key) in self.ahead:
            found = self.ahead.pop((name, key))
        else:
            found = reuse_index.entry(datastore, self.flow.name, name, key)
        unusable: str | None = None
        if found is not None and found.execution != self.execution.id:
            if found.execution not in self.prefetched:
                self._read_source(name, found.execution)
            checked = self.checked_batches.pop((found.execution, name), None)
            splits = reuse_index.usable(datastore, self.store.protocols, found, name, checked)
            if isinstance(splits, str):
                unusable = splits
            elif not self._same_inputs(found.execution, name, components):
                unusable = (
                    f"the entry's execution {found.execution} computed it from other inputs "
                    "(the entry is stale or forged)"
                )
            else:
                summary = self._summary_in(found.execution, name)
                if summary:  # usable() found it is theirs
                    self.sources[(found.execution, name)] = summary
                self.outputs[name] = self._outputs_in(found.execution, name)  # the same splits
                self.run.explanations[name] = (found.execution, f"reused from execution {found.execution}")
                return splits, found.execution
        latest = reuse_index.latest(datastore, self.flow.name, name)
        if latest is None:
            why = "first run: no earlier execution with reuse on finished it"
        elif found is not None:
            why = unusable or f"the values execution {found.execution} stored for it are gone or damaged"
        else:
            why = reuse.difference(
                latest.components, components, code.places, self._parameters_of(latest, components)
            )
        self.run.explanations[name] = (None, f"ran because {why}")
        return None

    def _reuse_ahead(self, name: str, execution: str, *, held_only: bool = False) -> None:
        """Read at once, in parallel, the index entries of the layers not keyed yet, with the keys
        they have if every layer they read that this run has not finished is reused from
        ``execution`` (with the values its records hold): down a chain of reused layers each then
        finds its entry read, instead of waiting for one request after its upstream's. An entry is
        used only for the key it was read for, and checked as any other before reuse; a guess that
        proves wrong (an upstream ran after all) costs its one read. ``held_only``: only the layers
        whose upstream layers' records there hold their splits themselves (read already: no batch
        file to wait for); a later call guesses the others."""
        source = self.flow.configuration.store(self.flow.name, execution)
        guessed: dict[str, str] = {}
        read_ahead = {layer for layer, _ in self.ahead}  # guessed before (one used is in self.keys)
        for layer in self.plan.order:
            if layer in ("Parameters", name) or layer in self.keys or layer in self.forced:
                continue
            if layer in read_ahead:
                continue
            if not self.flow.registry[layer].configuration.reuse:
                continue
            outputs: dict[str, dict[str, str]] = {}
            try:
                for upstream in self.plan.dependencies[layer]:
                    if upstream in self.outputs:
                        outputs[upstream] = self.outputs[upstream]
                    elif upstream != "Parameters" and (summary := self._summary_in(execution, upstream)):
                        outputs[upstream] = summary  # a guess: checked against the splits before reuse
                    elif upstream != "Parameters" and (
                        reuse_index.held_whole(source.record(upstream))
                        if held_only
                        else source.record(upstream) is not None
                    ):
                        outputs[upstream] = self._outputs_in(execution, upstream)
                    else:
                        break
                else:
                    guessed[layer] = reuse.key_of(self._components(layer, outputs)[0])
            except (IntegrityError, ValueError):  # its checks before reuse will say why
                continue
        datastore = self.flow.configuration.datastore
        entries = datastore.map_parallel(
            lambda layer: reuse_index.entry(datastore, self.flow.name, layer, guessed[layer]), list(guessed)
        )
        self.ahead.update(zip(((layer, guessed[layer]) for layer in guessed), entries, strict=True))

    def _split_keys(self, name: str, grid: foreach.Grid) -> tuple[str, list[str], list[tuple[str, ...]]]:
        """A foreach layer's key without its axes (``base``), each split's key, and what each split
        is given (``_split_inputs``), of which with ``base`` its key is made. The layer's other
        inputs stay in ``base``."""
        _, components = self.keys[name]
        prefixes = tuple(
            ("parameter:" if axis.layer == "Parameters" else f"input:{axis.layer}.")
            + (axis.attribute if axis.artifacts is not None else "")
            for axis in grid.axes
        )
        base = reuse.key_of({n: v for n, v in components.items() if not n.startswith(prefixes)})
        given = self._split_inputs(grid, self.store, range(grid.splits))
        keys = [reuse.key_of(dict(enumerate((base, *parts)))) for parts in given]  # type: ignore[arg-type]
        return base, keys, given

    @staticmethod
    def _split_inputs(
        grid: foreach.Grid, store: ExecutionStore, indices: Iterable[int]
    ) -> list[tuple[str, ...]]:
        """What each of splits ``indices`` of a foreach is given, as ``grid`` (read from ``store``)
        binds it: the digests of its items (or of the upstream split it reads)."""
        chained = {
            axis.layer: [
                reuse.split_digest(record) for record in store.split_records(axis.layer, range(axis.size))
            ]
            for axis in grid.axes
            if axis.artifacts is None
        }
        found = []
        for index in indices:
            parts = []
            for layer, attributes in sorted(grid.bindings(index).items()):
                for attribute, binding in sorted(attributes.items()):
                    if binding.artifact is not None:
                        item = binding.artifact
                        parts.append(f"{layer}.{attribute}={item.hash}:{item.hexdigest}:{item.protocol}")
                    else:
                        parts.append(f"{layer}[{binding.split}]={chained[layer][binding.split or 0]}")
            found.append(tuple(parts))
        return found

    def reuse_splits(self, name: str, grid: foreach.Grid) -> reuse_index.Reused | None:
        """The splits of a foreach layer that did not reuse whole, reused one by one where an
        earlier execution finished one with the same split key; their count joins the explanation."""
        base, keys, given = self._split_keys(name, grid)
        self.split_keys[name] = (base, keys)
        if name in self.forced or self.resume:
            return None
        datastore = self.flow.configuration.datastore
        known = reuse_index.split_entries(datastore, self.flow.name, name, base)
        wanted = self._given_the_same(
            name, given, {i: known[key] for i, key in enumerate(keys) if key in known}
        )
        found = reuse_index.usable_splits(datastore, self.store.protocols, self.flow.name, name, base, wanted)
        if found.records:
            source, why = self.run.explanations.get(name, (None, "ran"))
            self.run.explanations[name] = (
                source,
                f"{why}; {len(found.records)} of {len(keys)} splits reused",
            )
        return found

    def _given_the_same(
        self, name: str, given: list[tuple[str, ...]], wanted: Mapping[int, str]
    ) -> dict[int, str]:
        """The splits ``wanted`` names (index here -> ``"<execution>/<index>"``) that their execution
        gave the items this run gives them (``given``), as its own records say: a split index entry
        is trusted for nothing, so one naming another split (forged, or damaged) costs a
        recomputation. (That the rest of their key, ``base``, is this run's, ``usable_splits`` checks.)"""
        each = self.flow.registry[name].configuration.foreach
        assert each is not None
        by_execution: dict[str, list[tuple[int, int]]] = {}
        for index, where in wanted.items():
            execution, _, there = where.rpartition("/")
            if there.isdigit() and execution:
                by_execution.setdefault(execution, []).append((index, int(there)))
        kept: dict[int, str] = {}
        for execution, pairs in by_execution.items():
            try:
                source = self.flow.configuration.store(self.flow.name, execution)
                grid = foreach.grid(source, name, each)
                inside = [(index, there) for index, there in pairs if there < grid.splits]
                theirs = self._split_inputs(grid, source, [there for _, there in inside])
            except (IntegrityError, ValueError) as error:
                logger.warning(
                    "splits of layer %s are not reused from execution %s: %s", name, execution, error
                )
                continue
            same = {
                index: f"{execution}/{there}"
                for (index, there), inputs in zip(inside, theirs, strict=True)
                if inputs == given[index]
            }
            if len(same) < len(pairs):
                logger.warning(
                    "splits of layer %s are not reused from execution %s: its split index names splits there "
                    "that were given other items",
                    name,
                    execution,
                )
            kept.update(same)
        return kept

    def computed_with(
        self, name: str, batches: Iterable[str], splits: Mapping[int, SplitRecord]
    ) -> dict[str, Any]:
        """The reuse key (and a foreach's ``base``) ``name``'s record carries, if it is entered in
        the reuse index: reuse of it later requires its record to say so (``Record.key``); and the
        summary of its values (``Record.outputs``) of the splits in its ``batches`` written now and
        those given (``splits``: kept from before, reused, or held in the record): a rerun keys the
        layers reading it from that summary, before its batches are read (they are, to check it)."""
        if name not in self.keys or not self.flow.registry[name].configuration.reuse:
            return {}
        computed: dict[str, Any] = {"key": self.keys[name][0], "base": self.split_keys.get(name, (None,))[0]}
        try:
            computed["outputs"] = reuse_index.summarise({**self.store.batch_splits(name, batches), **splits})
        except Exception as error:  # optional: a rerun then reads the batches for it
            logger.debug("the record of layer %s is written without its values' summary: %s", name, error)
        return computed

    def _same_inputs(self, execution: str, name: str, components: Mapping[str, str]) -> bool:
        """Whether ``execution`` computed ``name`` from the inputs this run gives it, as its own
        records say: an index entry is trusted for nothing, so one naming an execution whose inputs
        differ (forged, or damaged) costs a recomputation, not a wrong value."""
        theirs: dict[str, str] = {}
        try:
            for upstream in sorted(self.plan.dependencies[name]):
                kind = "parameter:" if upstream == "Parameters" else f"input:{upstream}."
                theirs.update({kind + a: d for a, d in self._outputs_in(execution, upstream).items()})
        except (IntegrityError, ValueError) as error:
            logger.warning("layer %s is not reused from execution %s: %s", name, execution, error)
            return False
        ours = {n: v for n, v in components.items() if n.startswith(("parameter:", "input:"))}
        if theirs != ours:
            logger.warning(
                "layer %s is not reused from execution %s: its index entry names an execution whose inputs "
                "differ from this run's",
                name,
                execution,
            )
            return False
        return True

    def _outputs_in(self, execution: str, layer: str) -> dict[str, str]:
        """``reuse.outputs`` of ``layer`` in another execution, computed once per run: a chain of
        layers reused from it asks for each one twice (to check its readers' inputs, and as its own)."""
        if (execution, layer) not in self.sources:
            source = self.flow.configuration.store(self.flow.name, execution)
            self.sources[(execution, layer)] = reuse.outputs(source, layer)
        return self.sources[(execution, layer)]

    def _summary_in(self, execution: str, layer: str) -> dict[str, str]:
        """The summary of ``layer``'s values its record in ``execution`` holds (``Record.outputs``;
        empty if none), read from the record alone and trusted for nothing until checked."""
        found = self.flow.configuration.store(self.flow.name, execution).record(layer)
        return dict(found.outputs) if found is not None else {}

    def _forced_by(self, name: str) -> str:
        return "asked for" if name in self.forced_asked else "it depends on a forced layer"

    def _parameters_of(
        self, latest: reuse_index.ReuseEntry, components: Mapping[str, str]
    ) -> tuple[dict[str, object], dict[str, object]] | None:
        """Both executions' values of the parameters that differ, to say old -> new."""
        changed = [
            n.partition(":")[2]
            for n in set(latest.components) | set(components)
            if n.startswith("parameter:") and latest.components.get(n) != components.get(n)
        ]
        if not changed:
            return None
        sides: list[dict[str, object]] = []
        for execution in (latest.execution, self.execution.id):
            store = self.flow.configuration.store(self.flow.name, execution)
            values: dict[str, object] = {}
            try:
                split = store.split_record("Parameters", 0)
                for parameter in changed:
                    archive = split.archives.get(parameter) if split is not None else None
                    if archive is not None and len(archive.artifacts) == 1:
                        values[parameter] = store.load(archive.artifacts[0])
            except Exception:  # the explanation then names the parameter only
                return None
            sides.append(values)
        return sides[0], sides[1]

    def publish(self, name: str) -> None:
        """Enter the finished layer in the reuse index (its record is written)."""
        key, components = self.keys[name]
        self.outputs[name] = reuse.outputs(self.store, name)
        try:
            reuse_index.publish(
                self.flow.configuration.datastore, self.flow.name, name, key, self.execution.id, components
            )
            if name in self.split_keys:
                base, keys = self.split_keys[name]
                reuse_index.publish_splits(
                    self.flow.configuration.datastore,
                    self.flow.name,
                    name,
                    base,
                    {key: f"{self.execution.id}/{index}" for index, key in enumerate(keys)},
                )
        except Exception as error:  # the layer finished; only later reuse of it is lost
            logger.warning("layer %s could not be entered in the reuse index: %s", name, error)
