"""The store's capabilities, each built on first use: opening a store (``featurestore views``)
imports neither pyarrow nor the modules of ingestion, serving, training sets, privacy or DP."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from .catalog import Catalog
from .context import StoreContext

if TYPE_CHECKING:
    from .governance.workflow import PolicyWorkflow
    from .historical import Historical
    from .ingestion import Ingestion
    from .online import OnlineStore
    from .online.consistency import Consistency
    from .online.service import OnlineService
    from .privacy.dp import DifferentialPrivacyQueries
    from .privacy.erasure import Erasure
    from .privacy.reidentification import Reidentification
    from .push import Pusher
    from .training_sets import TrainingSets


class Capabilities:
    """What a FeatureStore does, one object per capability, made when first used.

    Args:
        ctx: The store's parts.
        catalog: Its definitions.
        online_store: The online store to use instead of the one the config names.
    """

    def __init__(self, ctx: StoreContext, catalog: Catalog, online_store: OnlineStore | None) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._online_store = online_store

    def close(self) -> None:
        """Record pending online-read audit entries and close the online store, if either was used
        (an online store given to the store is closed by its service, made here if it was not yet)."""
        if "online" in self.__dict__ or self._online_store is not None:
            self.online.close()

    @cached_property
    def ingestion(self) -> Ingestion:
        """Validated, treated batches into view versions."""
        from .ingestion import Ingestion

        return Ingestion(self._ctx, self._catalog)

    @cached_property
    def historical(self) -> Historical:
        """Reads and point-in-time joins."""
        from .historical import Historical

        return Historical(self._ctx, self._catalog)

    @cached_property
    def training(self) -> TrainingSets:
        """Saved training sets."""
        from .training_sets import TrainingSets

        return TrainingSets(self._ctx, self.historical, self.ingestion.last_ingestion)

    @cached_property
    def online(self) -> OnlineService:
        """Materialization and online serving."""
        from .online.service import OnlineService

        return OnlineService(self._ctx, self._catalog, self.historical, self._online_store)

    @cached_property
    def pusher(self) -> Pusher:
        """Rows straight to serving."""
        from .push import Pusher

        return Pusher(self._ctx, self.ingestion, self.online)

    @cached_property
    def consistency(self) -> Consistency:
        """Online against point-in-time answers."""
        from .online.consistency import Consistency

        return Consistency(self._ctx, self._catalog, self.historical, self.online)

    @cached_property
    def policies(self) -> PolicyWorkflow:
        """The policy review workflow."""
        from .governance.workflow import PolicyWorkflow

        return PolicyWorkflow(self._ctx, self._catalog, self.online, self.training)

    @cached_property
    def reidentification(self) -> Reidentification:
        """Tokens back to values, for allowed purposes."""
        from .privacy.reidentification import Reidentification

        return Reidentification(self._ctx, self._catalog)

    @cached_property
    def erasure(self) -> Erasure:
        """Erasure, retention and holds."""
        from .privacy.erasure import Erasure

        return Erasure(self._ctx, self._catalog, self.online, self.training)

    @cached_property
    def dp(self) -> DifferentialPrivacyQueries:
        """Differentially private aggregates."""
        from .privacy.dp import DifferentialPrivacyQueries

        return DifferentialPrivacyQueries(self._ctx, self._catalog)
