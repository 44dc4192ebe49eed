"""Data policies: the YAML files legal reviews, as loaded, checked and compared."""

from .loader import load_policies, load_policy, parse_policy
from .model import ColumnRule, Policy, Purpose
from .review import plan_policy, policy_markdown
from .schema import policy_json_schema

__all__ = [
    "ColumnRule",
    "Policy",
    "Purpose",
    "load_policies",
    "load_policy",
    "parse_policy",
    "plan_policy",
    "policy_json_schema",
    "policy_markdown",
]
