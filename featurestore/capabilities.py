"""The store's capabilities, each built on first use: opening a store (``featurestore views``)
imports neither pyarrow nor the modules of ingestion, serving, training sets, privacy or DP."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from .catalog import Catalog
from .context import StoreContext

if TYPE_CHECKING:
    from .compaction import Compactor
    from .dp_queries import DifferentialPrivacyQueries
    from .erasure import Erasure
    from .erasure_proof import ErasureProofs
    from .historical import Historical
    from .holds import Holds
    from .ingestion import Ingestion
    from .lineage import Lineage
    from .online import OnlineStore
    from .online.consistency import Consistency
    from .online.service import OnlineService
    from .policy_workflow import PolicyWorkflow
    from .push import Pusher
    from .reidentification import Reidentification
    from .retention import Retention
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
        from .policy_workflow import PolicyWorkflow

        return PolicyWorkflow(self._ctx, self._catalog, self.online, self.training)

    @cached_property
    def reidentification(self) -> Reidentification:
        """Tokens back to values, for allowed purposes."""
        from .reidentification import Reidentification

        return Reidentification(self._ctx, self._catalog)

    @cached_property
    def lineage(self) -> Lineage:
        """Where subjects are: every view version, online table and training set."""
        from .lineage import Lineage

        return Lineage(self._ctx, self._catalog, self.online, self.training)

    @cached_property
    def compactor(self) -> Compactor:
        """Compaction, which completes the deletion requests waiting for it."""
        from .compaction import Compactor

        return Compactor(self._ctx)

    @cached_property
    def holds(self) -> Holds:
        """Legal holds."""
        from .holds import Holds

        return Holds(self._ctx, self._catalog, self.lineage)

    @cached_property
    def erasure(self) -> Erasure:
        """Erasure requests."""
        from .erasure import Erasure

        return Erasure(self._ctx, self.lineage, self.compactor)

    @cached_property
    def proofs(self) -> ErasureProofs:
        """Proofs that erased subjects are gone."""
        from .erasure_proof import ErasureProofs

        return ErasureProofs(self._ctx, self.lineage)

    @cached_property
    def retention(self) -> Retention:
        """Retention runs."""
        from .retention import Retention

        return Retention(self._ctx, self._catalog, self.lineage, self.holds, self.compactor)

    @cached_property
    def dp(self) -> DifferentialPrivacyQueries:
        """Differentially private aggregates."""
        from .dp_queries import DifferentialPrivacyQueries

        return DifferentialPrivacyQueries(self._ctx, self._catalog)
