"""Governance: the policy in force (:mod:`.rules`, :mod:`.policies`), decisions as grants
(:mod:`.access`), what policies do to data (:mod:`.treatments`) and the review workflow
(:mod:`.workflow`)."""

from .access import MAINTAIN, MATERIALIZE, READS, WRITE, Access, Grant, check_definitions, decide
from .policies import PolicySource
from .rules import Approval, Draft, PolicySnapshot, Proposal, ViewState, decide_snapshot
from .treatments import Treatments

__all__ = [
    "MAINTAIN",
    "MATERIALIZE",
    "READS",
    "WRITE",
    "Access",
    "Approval",
    "Draft",
    "Grant",
    "PolicySnapshot",
    "PolicySource",
    "Proposal",
    "Treatments",
    "ViewState",
    "check_definitions",
    "decide",
    "decide_snapshot",
]
