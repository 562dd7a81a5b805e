"""Protocols as data: each protocol is a pydantic parameter model plus a pure ``expand`` to a :class:`Plan`.

``PROTOCOLS`` maps the protocol name used in configs (``[protocols.<name>]``) to its
:class:`ProtocolSpec`. :func:`expand` validates a plain dict against the protocol's model and
expands it; it touches no device, so a config can be fully checked before anything moves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from acquisition.events import Plan

from . import bsbd, fisher_scan, generalisation, speckle_sim
from ._common import DEFAULT_DMD_SHAPE, EventSequence, ProtocolParams


@dataclass(frozen=True)
class ProtocolSpec:
    """A registered protocol: its config name, parameter model, expansion function, and the virtual
    bench configuration (``bench.configuration``) whose physics images it."""

    name: str
    params: type[ProtocolParams]
    expand: Callable[[Any, tuple[int, int]], Plan]
    simulated_bench: str

    def validate(self, protocol_config: Mapping[str, Any] | None) -> ProtocolParams:
        """Validated parameters (pydantic ``ValidationError`` on bad input)."""
        return self.params.model_validate(dict(protocol_config or {}))


PROTOCOLS: dict[str, ProtocolSpec] = {
    spec.name: spec
    for spec in (
        ProtocolSpec(bsbd.NAME, bsbd.BsbdParams, bsbd.expand, "reflection"),
        ProtocolSpec(speckle_sim.NAME, speckle_sim.SpeckleSimParams, speckle_sim.expand, "speckle_sim"),
        ProtocolSpec(
            generalisation.NAME, generalisation.GeneralisationParams, generalisation.expand, "diffuser"
        ),
        ProtocolSpec(fisher_scan.NAME, fisher_scan.FisherScanParams, fisher_scan.expand, "reflection"),
    )
}


def canonical_name(name: str) -> str:
    """Registry name for ``name``; underscores are accepted for hyphens (``speckle_sim``)."""
    key = name.strip().lower().replace("_", "-")
    if key not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r} (known: {', '.join(sorted(PROTOCOLS))})")
    return key


def expand(
    name: str, protocol_config: Mapping[str, Any] | None, dmd_shape: tuple[int, int] = DEFAULT_DMD_SHAPE
) -> Plan:
    """Validate ``protocol_config`` for protocol ``name`` and expand it purely into a :class:`Plan`."""
    spec = PROTOCOLS[canonical_name(name)]
    return spec.expand(spec.validate(protocol_config), (int(dmd_shape[0]), int(dmd_shape[1])))


__all__ = ["PROTOCOLS", "ProtocolSpec", "ProtocolParams", "EventSequence", "canonical_name", "expand"]
