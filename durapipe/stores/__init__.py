"""Where durapipe keeps state outside Temporal's history: step checkpoints, provider limits, blobs
(files passed to pipes) and large payloads.

Each store has a local driver (SQLite or files under one directory) and a networked one (Redis, S3)
for workers on several hosts.
"""

from durapipe.stores._blobs import (
    BlobNotFound,
    BlobStore,
    LocalBlobStore,
    blob_store,
    upload,
    use_blob_store,
)
from durapipe.stores._checkpoints import (
    CheckpointStore,
    RedisCheckpoints,
    SqliteCheckpoints,
    checkpoint_key,
    open_store,
)
from durapipe.stores._limits import (
    LimitStore,
    RedisLimits,
    SqliteLimits,
    limited,
    open_limits,
)
from durapipe.stores._payloads import LocalFileDriver, external_storage, with_external_storage

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "CheckpointStore",
    "LimitStore",
    "LocalBlobStore",
    "LocalFileDriver",
    "RedisCheckpoints",
    "RedisLimits",
    "SqliteCheckpoints",
    "SqliteLimits",
    "blob_store",
    "checkpoint_key",
    "external_storage",
    "limited",
    "open_limits",
    "open_store",
    "upload",
    "use_blob_store",
    "with_external_storage",
]
