"""Where everything lives inside a datastore. Knows keys, not transports.

::

    artifacts/<hh>/<sha256>                                       one stored value, shared by all flows
    flows/<Flow>/executions/<id>/execution.json                   execution metadata
    flows/<Flow>/executions/<id>/layers/<Layer>/record.json       written when the layer finished
    flows/<Flow>/executions/<id>/layers/<Layer>/archives/<name>/<i>.json  archive of one name in split i
    flows/<Flow>/executions/<id>/layers/<Layer>/splits/<i>.json           split record: split i finished

Every name is validated before it becomes part of a key (see :mod:`laminar.names`).
"""

from __future__ import annotations

import re

from laminar.names import validate

ARCHIVE_SUFFIX = ".json"


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


def layers(flow: str, execution_id: str) -> str:
    return execution(flow, execution_id) + "layers/"


def layer(flow: str, execution_id: str, layer_name: str) -> str:
    return layers(flow, execution_id) + validate(layer_name, what="layer name") + "/"


def record(flow: str, execution_id: str, layer_name: str) -> str:
    return layer(flow, execution_id, layer_name) + "record.json"


def splits(flow: str, execution_id: str, layer_name: str) -> str:
    return layer(flow, execution_id, layer_name) + "splits/"


def split_record(flow: str, execution_id: str, layer_name: str, index: int) -> str:
    return f"{splits(flow, execution_id, layer_name)}{int(index)}.json"


def archives(flow: str, execution_id: str, layer_name: str) -> str:
    return layer(flow, execution_id, layer_name) + "archives/"


def archive(flow: str, execution_id: str, layer_name: str, index: int, name: str) -> str:
    # One directory per artifact name, not per split: a split costs no directory of its own.
    return (
        f"{archives(flow, execution_id, layer_name)}{validate(name, what='artifact name')}/{int(index)}.json"
    )
