"""Re-identification: the original value behind a token, for a purpose with ``reidentify``
access, decided as a grant like every other read and audited (never with the value)."""

from __future__ import annotations

import hashlib
from typing import NoReturn

from .catalog import Catalog
from .context import StoreContext
from .privacy.pseudonymize import token_context
from .privacy.treatments import treatment_of


class Reidentification:
    """Turns tokens of tokenized columns back into their values."""

    def __init__(self, ctx: StoreContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog

    def reidentify(self, view: str, column: str, token: str, *, purpose: str | None) -> str:
        """The value behind `token` in `column` of `view`."""
        ctx = self.ctx
        vv = self.catalog.get_view(view)
        snapshot = ctx.access.snapshot()
        features = [column] if column in vv.view.feature_names else []
        grant = ctx.access.grant(snapshot, vv, features, purpose, ("reidentify",))
        policy = grant.policy

        def refuse(why: str) -> NoReturn:
            ctx.access.refuse(snapshot, vv, features, purpose, ("reidentify",), why)

        if policy is None:
            refuse(f"feature view '{vv.view.name}' is not governed by a policy: it holds no tokens")
        rule = policy.rule(column)
        if rule is None or not treatment_of(rule).reversible:
            refuse(
                f"column '{column}' of '{vv.view.name}' is not tokenized under policy '{policy.id}'; "
                "only tokens can be re-identified"
            )
        value = treatment_of(rule).reverse(
            token, rule, ctx.keys, context=token_context(policy.id, vv.view.name, column)
        )
        ctx.audit.append(
            ctx.actor,
            "reidentify",
            f"{vv.ref}.{column}",
            purpose=purpose,
            details={"token_sha256": hashlib.sha256(token.encode()).hexdigest()},
        )
        return value
