"""The content store's local driver: one layout and one file mode for blobs and payloads, and the
folders earlier versions wrote still resolve."""

from __future__ import annotations

import asyncio
import hashlib
import stat
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import StorageDriverClaim, StorageDriverStoreContext

import durapipe as dp
from durapipe.stores._payloads import LocalFileDriver


def test_blobs_and_payloads_share_one_layout_and_mode(tmp_path: Path) -> None:
    blobs = dp.stores.LocalBlobStore(tmp_path / "blobs")
    ref = blobs.put(b"a document", media_type="text/plain")
    payloads = LocalFileDriver(tmp_path / "payloads")
    payload = Payload(data=b"a large answer")
    context = StorageDriverStoreContext(target=None)
    [claim] = asyncio.run(payloads.store(context, [payload]))
    data = payload.SerializeToString(deterministic=True)
    digest = hashlib.sha256(data).hexdigest()
    assert claim.claim_data == {"sha256": digest}  # the claim format histories hold
    written = [
        tmp_path / "blobs" / ref.blob[7:9] / ref.blob[7:],
        tmp_path / "payloads" / digest[:2] / digest,
    ]
    for path in written:
        assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert written[1].read_bytes() == data


def test_payloads_in_the_earlier_flat_folder_still_resolve(tmp_path: Path) -> None:
    # Before the stores shared a driver, the payload store kept <folder>/<digest>.
    folder = tmp_path / "payloads"
    folder.mkdir()
    payload = Payload(data=b"written by an earlier version")
    data = payload.SerializeToString(deterministic=True)
    digest = hashlib.sha256(data).hexdigest()
    (folder / digest).write_bytes(data)
    store = dp.stores.LocalContentStore(folder)
    assert store.exists(digest) and store.get(digest) == data
    claim = StorageDriverClaim(claim_data={"sha256": digest})
    assert LocalFileDriver(folder)._retrieve([claim]) == [payload]
