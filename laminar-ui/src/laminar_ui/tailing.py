"""Following an execution's logs like ``tail -f``: each split attempt's new text only.

A split attempt's log is stored as numbered chunks, never rewritten (:mod:`laminar._storage.logs`;
what a running split flushes is stored within a second). A :class:`Tail` belongs to one event
stream, that is one page following a run: it remembers how many chunks of each attempt it sent and
reads only the chunks after them, so the page appends what is new instead of receiving every log
again. The first time it reads an attempt it sends the end of its log (at most ``LOG_CHARS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from laminar import Flow
from laminar._cli.common import is_foreach
from laminar._cli.output import one_line
from laminar._cli.report import LOG_CHARS, LOG_SPLITS, LogBlock
from laminar._storage import layout
from laminar._storage.logs import logged_attempts, logged_splits
from laminar._storage.status import LayerStatus
from laminar.plugins import Datastore


@dataclass
class Appended:
    """What a read found that was not sent yet: new text by log key, and the keys read the first
    time (their text is the log's end, to show instead of anything shown before)."""

    text: dict[str, str] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Tail:
    """The logs of one execution as one page follows them (see the module)."""

    def __init__(self, datastore: Datastore, execution: str) -> None:
        self.datastore = datastore
        self.execution = execution
        self.sent: dict[str, int] = {}  # log key: chunks sent

    def read(self, flow: Flow, layers: Sequence[LayerStatus]) -> tuple[list[LogBlock], Appended]:
        """The logs the page shows (their blocks, without text: the page keeps what it was sent),
        the last attempt of up to ``LOG_SPLITS`` splits of each layer, and what each has that was not
        sent yet."""
        blocks: list[LogBlock] = []
        appended = Appended()
        for layer in layers:
            if layer.status in ("not started", "skipped"):
                continue
            try:  # the splits that logged, running ones too (their attempts are recorded when they end)
                indices = logged_splits(self.datastore, flow.name, self.execution, layer.name)
            except Exception as error:
                appended.notes.append(f"logs of {layer.name}: {type(error).__name__}: {one_line(str(error))}")
                continue
            split = is_foreach(flow, layer.name) or (layer.splits or 0) > 1 or len(indices) > 1
            for index in indices[:LOG_SPLITS]:
                try:
                    self._read(flow.name, layer.name, index, blocks, appended, split)
                except Exception as error:  # the store failed: say so, show the rest
                    appended.notes.append(
                        f"logs of {layer.name} split {index}: {type(error).__name__}: {one_line(str(error))}"
                    )
            if len(indices) > LOG_SPLITS:
                appended.notes.append(f"logs of {layer.name}: {LOG_SPLITS} of {len(indices)} splits shown")
        return blocks, appended

    def _read(
        self, flow: str, layer: str, index: int, blocks: list[LogBlock], appended: Appended, split: bool
    ) -> None:
        """Split ``index``'s last attempt that logged: its block, and what was not sent of it."""
        attempts = logged_attempts(self.datastore, flow, self.execution, layer, index)
        if not attempts:
            return
        attempt = attempts[-1]
        prefix = layout.logs(flow, self.execution, layer, index, attempt)
        chunks = sorted(
            (number, prefix + name)
            for name in self.datastore.list_prefix(prefix)
            if (number := layout.parse_log_chunk(name)) is not None
        )
        key = f"{layer}/{index}/{attempt}"
        where = layer + (f" split {index}" if split else "") + (f", attempt {attempt}" if attempt else "")
        sent = self.sent.get(key)
        new = chunks[sent or 0 :]
        text = b"".join(self.datastore.read_many([chunk for _, chunk in new])).decode("utf-8", "replace")
        cut = sent is None and len(text) > LOG_CHARS
        blocks.append(LogBlock(where, "", cut, key))
        if sent is None:
            appended.fresh.append(key)
            appended.text[key] = text[-LOG_CHARS:] if cut else text
        elif text:
            appended.text[key] = text
        self.sent[key] = len(chunks)
