"""featurestore: a privacy-preserving feature store.

>>> from featurestore import FeatureStore, Entity, FeatureView
>>> store = FeatureStore(memory=True)
>>> customer = Entity(name="customer", join_keys={"customer_id": "string"})
>>> profile = FeatureView(name="profile", entity="customer", features={"age": "int64"})
>>> print(store.apply([customer, profile]))
+ create entity 'customer' (join keys: customer_id string)
+ create feature view 'profile' v1 (features: age int64)
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .definitions import Entity, Feature, FeatureView
from .errors import (
    AuditChainBroken,
    ConfigError,
    DefinitionError,
    FeatureStoreError,
    IngestionError,
    KeyManagementError,
    NotFoundError,
    PolicyError,
    PolicyViolation,
    PrivacyBudgetExceeded,
    RegistryOutOfDate,
    RetrievalError,
    StoreDamaged,
    StoreLockedError,
    UnknownFeatureError,
    UnknownViewError,
)
from .feature_services import FeatureService

if _TYPE_CHECKING:
    from .store import FeatureStore

__version__ = "0.1.0"


def __getattr__(name: str) -> _Any:
    """``FeatureStore`` is imported on first use: the CLI's ``--help`` does not pay for DuckDB,
    SQLAlchemy and the rest of the store."""
    if name == "FeatureStore":
        from .store import FeatureStore

        globals()["FeatureStore"] = FeatureStore
        return FeatureStore
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "FeatureStore"})


__all__ = [
    "AuditChainBroken",
    "ConfigError",
    "DefinitionError",
    "Entity",
    "Feature",
    "FeatureService",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureView",
    "IngestionError",
    "KeyManagementError",
    "NotFoundError",
    "PolicyError",
    "PolicyViolation",
    "PrivacyBudgetExceeded",
    "RegistryOutOfDate",
    "RetrievalError",
    "StoreDamaged",
    "StoreLockedError",
    "UnknownFeatureError",
    "UnknownViewError",
]
