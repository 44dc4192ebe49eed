"""The JSON Schema of policy files (``featurestore policy schema``), for editors to validate.

The loader checks more than the schema can say (every classified kind has a treatment, DP
purposes have dp_aggregates access, ...); the schema is for structure and spelling.
"""

from __future__ import annotations

from typing import Any

from .model import ACCESS, KINDS, LEGAL_BASES, NORMALIZERS, TREATMENTS

_DURATION = {
    "type": "string",
    "pattern": r"^(P(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?|(\d+[wdhms])+)$",
    "description": "ISO 8601 duration, e.g. P30D, P6M, P1Y",
}
_GENERALIZE = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"to": {"enum": ["month", "year"]}},
            "required": ["to"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"width": {"type": "number", "exclusiveMinimum": 0}},
            "required": ["width"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"prefix": {"type": "integer", "minimum": 1}},
            "required": ["prefix"],
            "additionalProperties": False,
        },
    ]
}
_BUDGET = {
    "type": "object",
    "properties": {
        "epsilon": {"type": "number", "exclusiveMinimum": 0},
        "delta": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "period": _DURATION,
    },
    "required": ["epsilon"],
    "additionalProperties": False,
}


def policy_json_schema() -> dict[str, Any]:
    """The schema as a dict (draft 2020-12)."""
    column = {
        "oneOf": [
            {"enum": list(KINDS)},
            {
                "type": "object",
                "properties": {
                    "kind": {"enum": list(KINDS)},
                    "treatment": {"enum": list(TREATMENTS)},
                    "normalize": {"enum": list(NORMALIZERS)},
                    "region": {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                    "country_code": {"type": ["string", "integer"]},
                    "generalize": _GENERALIZE,
                    "category": {"type": "string"},
                },
                "required": ["kind"],
                "additionalProperties": False,
            },
        ]
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://featurestore.dev/schemas/policy-v1.json",
        "title": "featurestore data policy",
        "type": "object",
        "required": [
            "id",
            "version",
            "owner",
            "legal_basis",
            "effective_from",
            "review_by",
            "scope",
            "classification",
            "treatments",
            "purposes",
        ],
        "additionalProperties": False,
        "properties": {
            "api_version": {"const": "featurestore.policy/v1"},
            "id": {"type": "string", "minLength": 1},
            "version": {"type": "integer", "minimum": 1},
            "title": {"type": "string"},
            "owner": {"type": "string"},
            "legal_basis": {"enum": list(LEGAL_BASES)},
            "effective_from": {"type": "string", "format": "date"},
            "review_by": {"type": "string", "format": "date"},
            "scope": {
                "type": "object",
                "properties": {"feature_views": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                "required": ["feature_views"],
                "additionalProperties": False,
            },
            "classification": {"type": "object", "additionalProperties": column},
            "treatments": {
                "type": "object",
                "propertyNames": {"enum": list(KINDS)},
                "additionalProperties": {"enum": list(TREATMENTS)},
            },
            "purposes": {
                "type": "object",
                "properties": {
                    "allowed": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "access": {"type": "array", "items": {"enum": list(ACCESS)}, "minItems": 1},
                                "sensitive_attributes": {"type": "boolean"},
                            },
                            "required": ["access"],
                            "additionalProperties": False,
                        },
                    },
                    "denied": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
            "retention": {
                "type": "object",
                "properties": {
                    "offline": _DURATION,
                    "online": _DURATION,
                    "training_sets": _DURATION,
                    "expired_training_sets": {"enum": ["rewrite", "delete"]},
                },
                "additionalProperties": False,
            },
            "erasure": {
                "type": "object",
                "properties": {"subject_key": {"type": "string"}, "sla": _DURATION},
                "required": ["subject_key"],
                "additionalProperties": False,
            },
            "differential_privacy": {
                "type": "object",
                "properties": {
                    "purposes": {"type": "array", "items": {"type": "string"}},
                    "budget": _BUDGET,
                    "per_release": _BUDGET,
                    "contribution_bounds": {
                        "type": "object",
                        "properties": {
                            "max_rows_per_subject": {"type": "integer", "minimum": 1},
                            "max_groups_per_subject": {"type": "integer", "minimum": 1},
                            "clamp": {"type": "object"},
                        },
                        "additionalProperties": False,
                    },
                    "min_group_size": {"type": "integer", "minimum": 1},
                    "public_groups": {"type": "object", "additionalProperties": {"type": "array"}},
                    "per_consumer": {"type": "boolean"},
                    "decimals": {"type": "integer", "minimum": 0, "maximum": 6},
                },
                "additionalProperties": False,
            },
        },
    }
