"""storageUri downloads as KServe's storage initializer does them: one module per scheme."""

from marserve.storage.base import PullResult, RemoteObject, StorageError, StorageSettings
from marserve.storage.pull import pull
from marserve.storage.uri import Location, parse

__all__ = [
    "Location",
    "PullResult",
    "RemoteObject",
    "StorageError",
    "StorageSettings",
    "parse",
    "pull",
]
