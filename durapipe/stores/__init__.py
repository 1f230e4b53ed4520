"""Where durapipe keeps state outside Temporal's history: step checkpoints, provider limits, blobs
(files passed to pipes) and large payloads.

Each store has a local driver (SQLite or files under one directory) and a networked one (Redis, S3)
for workers on several hosts. Blobs and payloads share one content-addressed store
(`ContentStore`: `LocalContentStore`, `S3ContentStore`).
"""

from durapipe.stores._blobs import (
    BlobNotFound,
    BlobStore,
    ContentBlobStore,
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
    prune_checkpoints,
)
from durapipe.stores._content import (
    ContentStore,
    LocalContentStore,
    S3ContentStore,
    open_content_store,
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
    "ContentBlobStore",
    "ContentStore",
    "LimitStore",
    "LocalBlobStore",
    "LocalContentStore",
    "LocalFileDriver",
    "RedisCheckpoints",
    "RedisLimits",
    "S3ContentStore",
    "SqliteCheckpoints",
    "SqliteLimits",
    "blob_store",
    "checkpoint_key",
    "external_storage",
    "limited",
    "open_content_store",
    "open_limits",
    "open_store",
    "prune_checkpoints",
    "upload",
    "use_blob_store",
    "with_external_storage",
]
