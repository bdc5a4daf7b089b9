"""Where everything lives inside a datastore. Knows keys, not transports.

::

    artifacts/<hh>/<digest>                                       one stored value, shared by all flows
    flows/<Flow>/executions/<id>/execution.json                   execution metadata, written once the
                                                                  Parameters layer is stored
    flows/<Flow>/executions/<id>/status.json                      how its latest run went (running,
                                                                  succeeded, failed, cancelled)
    flows/<Flow>/executions/<id>/leases/<generation>.json         who runs the execution (one file per
                                                                  run or resume, created exclusively)
    flows/<Flow>/executions/<id>/layers/<Layer>/record.json       written when the layer finished; a reused
                                                                  layer's also points at the splits other
                                                                  executions hold (``borrowed``), which it
                                                                  reads there: no batch of its own for them;
                                                                  a layer of one split's holds that split's
                                                                  record (``held``): no batch file for it;
                                                                  a layer that finished with no status.json
                                                                  written or found carries its final status
                                                                  (``ran``), a layer reused whole where from
                                                                  and why (``reused``): no status.json
    flows/<Flow>/executions/<id>/records/<Layer>.<n>.jsonl        the records of n layers that finished together,
                                                                  one a line, the first's layer named: written
                                                                  instead of a record.json each (``pack``);
                                                                  a layer's record.json, if any, reads first
    flows/<Flow>/executions/<id>/layers/<Layer>/splits/<i>-<j>.json  a batch of finished splits' records
                                                                  (their archives), lowest index i, highest j;
                                                                  once the layer finished, those its record
                                                                  names (one, if compacted: see ``commit``)
    flows/<Flow>/executions/<id>/layers/<Layer>/status.json       how the layer's latest run went: its
                                                                  state, its splits' attempts and errors
                                                                  (read before what its record carries)
    flows/<Flow>/executions/<id>/layers/<Layer>/logs/<i>/<attempt>/<n>.log
                                                                  what attempt <attempt> of split i printed
                                                                  and logged, in chunks n = 0, 1, ...
    flows/<Flow>/reuse/<Layer>/<key>.json                         the reuse index: the execution whose
                                                                  finished layer has this key (written
                                                                  after that layer's record; JSON only)
    flows/<Flow>/reuse/<Layer>/splits/<base>.json                 a foreach layer's splits by their own
                                                                  keys, for its key without the axes: every
                                                                  execution's, the oldest dropped past a bound
    flows/<Flow>/executions/<id>/repaired/<time>/<key>            what ``laminar verify --repair`` moved
                                                                  aside at <time>: records and batches under
                                                                  their keys in the execution, damaged
                                                                  values under artifacts/<hh>/<digest>

Every name is validated before it becomes part of a key (see :mod:`laminar._names`).
"""

from __future__ import annotations

import re

from laminar._names import is_valid, validate

_HEX = re.compile(r"[0-9a-f]{8,128}")


def artifact(hexdigest: str) -> str:
    if not _HEX.fullmatch(hexdigest):
        raise ValueError(f"not a hex digest: {hexdigest!r}")
    return f"artifacts/{hexdigest[:2]}/{hexdigest}"


def executions(flow: str) -> str:
    return f"flows/{validate(flow, what='flow name')}/executions/"


def execution(flow: str, execution_id: str) -> str:
    return executions(flow) + validate(execution_id, what="execution id") + "/"


def execution_metadata(flow: str, execution_id: str) -> str:
    return execution(flow, execution_id) + "execution.json"


def execution_status(flow: str, execution_id: str) -> str:
    return execution(flow, execution_id) + "status.json"


def leases(flow: str, execution_id: str) -> str:
    return execution(flow, execution_id) + "leases/"


_LEASE = re.compile(r"(\d{10})\.json")


def lease(flow: str, execution_id: str, generation: int) -> str:
    return leases(flow, execution_id) + f"{int(generation):010d}.json"


def parse_lease(name: str) -> int | None:
    """The generation of a lease file name, or None for anything else in the directory."""
    match = _LEASE.fullmatch(name)
    return int(match[1]) if match else None


def layers(flow: str, execution_id: str) -> str:
    return execution(flow, execution_id) + "layers/"


def layer(flow: str, execution_id: str, layer_name: str) -> str:
    return layers(flow, execution_id) + validate(layer_name, what="layer name") + "/"


def record(flow: str, execution_id: str, layer_name: str) -> str:
    return layer(flow, execution_id, layer_name) + "record.json"


def record_packs(flow: str, execution_id: str) -> str:
    return execution(flow, execution_id) + "records/"


_PACK = re.compile(r"(.+)\.([1-9]\d*)\.jsonl")


def record_pack_name(first_layer: str, count: int) -> str:
    """The name (within ``records/``) of a pack of ``count`` layer records, ``first_layer``'s first."""
    return f"{validate(first_layer, what='layer name')}.{int(count)}.jsonl"


def record_pack(flow: str, execution_id: str, name: str) -> str:
    if parse_record_pack(name) is None:
        raise ValueError(f"not a record pack name: {name!r}")
    return record_packs(flow, execution_id) + name


def parse_record_pack(name: str) -> tuple[str, int] | None:
    """``(first layer, count)`` from a record pack's name, or None for anything else there."""
    match = _PACK.fullmatch(name)
    if match is None or not is_valid(match[1]):
        return None
    return match[1], int(match[2])


def splits(flow: str, execution_id: str, layer_name: str) -> str:
    return layer(flow, execution_id, layer_name) + "splits/"


_BATCH = re.compile(r"(\d+)-(\d+)\.json")


def split_batch_name(first: int, last: int) -> str:
    """The name (within ``splits/``) of a batch whose split indices run from ``first`` to ``last``."""
    return f"{int(first)}-{int(last)}.json"


def split_batch(flow: str, execution_id: str, layer_name: str, name: str) -> str:
    if parse_split_batch(name) is None:
        raise ValueError(f"not a split batch name: {name!r}")
    return splits(flow, execution_id, layer_name) + name


def parse_split_batch(name: str) -> tuple[int, int] | None:
    """``(first, last)`` from a batch name, or None for anything else in the directory."""
    match = _BATCH.fullmatch(name)
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    return (first, last) if first <= last else None


def layer_status(flow: str, execution_id: str, layer_name: str) -> str:
    return layer(flow, execution_id, layer_name) + "status.json"


def logs(
    flow: str, execution_id: str, layer_name: str, index: int | None = None, attempt: int | None = None
) -> str:
    """The directory of a layer's logs, of split ``index``'s, or of one of its attempts."""
    logged = layer(flow, execution_id, layer_name) + "logs/"
    if index is None:
        return logged
    split = logged + f"{int(index)}/"
    return split if attempt is None else split + f"{int(attempt)}/"


_CHUNK = re.compile(r"(\d{6})\.log")


def log_chunk(flow: str, execution_id: str, layer_name: str, index: int, attempt: int, number: int) -> str:
    return logs(flow, execution_id, layer_name, index, attempt) + f"{int(number):06d}.log"


def parse_log_chunk(name: str) -> int | None:
    """The number of a log chunk's file name, or None for anything else in the directory."""
    match = _CHUNK.fullmatch(name)
    return int(match[1]) if match else None


def repaired(flow: str, execution_id: str, stamp: str) -> str:
    """Where one ``laminar verify --repair`` of the execution moves what it sets aside."""
    return execution(flow, execution_id) + f"repaired/{validate(stamp, what='repair time')}/"


_KEY = re.compile(r"[0-9a-f]{64}")


def reuse_entries(flow: str, layer_name: str) -> str:
    """The reuse index's entries for one layer of a flow."""
    return f"flows/{validate(flow, what='flow name')}/reuse/{validate(layer_name, what='layer name')}/"


def reuse_entry(flow: str, layer_name: str, key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a reuse key: {key!r}")
    return reuse_entries(flow, layer_name) + f"{key}.json"


def reuse_splits(flow: str, layer_name: str, base: str) -> str:
    if not _KEY.fullmatch(base):
        raise ValueError(f"not a reuse key: {base!r}")
    return reuse_entries(flow, layer_name) + f"splits/{base}.json"


def reuse_index(flow: str) -> str:
    return f"flows/{validate(flow, what='flow name')}/reuse/"
