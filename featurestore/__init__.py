"""featurestore: a privacy-preserving feature store.

>>> from featurestore import FeatureStore, Entity, FeatureView
>>> store = FeatureStore(memory=True)
>>> customer = Entity(name="customer", join_keys={"customer_id": "string"})
>>> profile = FeatureView(name="profile", entity="customer", features={"age": "int64"})
>>> print(store.apply([customer, profile]))
+ create entity 'customer' (join keys: customer_id string)
+ create feature view 'profile' v1 (features: age int64)
"""

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
from .store import FeatureStore

__version__ = "0.1.0"

__all__ = [
    "AuditChainBroken",
    "ConfigError",
    "DefinitionError",
    "Entity",
    "Feature",
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
