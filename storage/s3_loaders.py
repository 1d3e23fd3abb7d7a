"""PyTorch loaders over stores in object storage, each streamed the way its format's users stream it.

    from storage.s3_loaders import make_s3_loader
    with storage.open_store("s3://image-lab/cifar") as store:
        loader = make_s3_loader(store, batch_size=256, num_workers=2, seed=0)
        for epoch in range(2):
            for batch in loader:        # (images, labels) or (images, labels, ids)
                ...

* WebDataset: ``webdataset.WebDataset`` over ``pipe:aws s3 cp s3://.../shard-N.tar -``
  URLs, shards shuffled and split among workers, samples through a 1,000-sample shuffle
  buffer (its usual pipeline); batches carry the ids from the sample keys.
* LitData: ``StreamingDataset("s3://...", cache_dir=...)`` in its ``StreamingDataLoader``.
* MDS: Streaming's ``StreamingDataset(streams=[Stream(remote="s3://...", local=cache)])``.
* Lance: ``lance.torch.data.LanceDataset("s3://...", dataset_options={"storage_options": ...})``,
  batches read by range in a random order, workers spawned (Lance is not fork-safe).
* Parquet: whole row groups in a seeded random order per epoch, dealt out to the workers,
  samples through the same 1,000-sample shuffle buffer
  (:class:`storage.formats.parquet_torch.ParquetRowGroups`, as its local loader).
* Every other format (Zarr read in place, and the formats downloaded first):
  :class:`storage.torch.StoreDataset`'s batched path over the remote store, shuffled by
  the sampler.

Workers are kept between epochs (``persistent_workers``), so a later epoch reads what the
library cached in the first one, as a training job's second epoch does. Importing this
module imports torch.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .s3.clients import lance_storage_options, litdata_storage_options, point_streaming_at
from .s3.location import S3Location
from .s3.remote import reopen_remote
from .torch import StoreDataset, check_loader_settings, collate_samples, make_loader

SHUFFLE_BUFFER = 1_000  # WebDataset's samples held for shuffling, its documentation's usual size
LOADER_TIMEOUT = 120.0


class SampleCollate:
    """Dict samples (``image``, ``label``, ``id``) to ``(images, labels, ids)``: stacked when the store's
    images share a size, else a list; encoded images (a photo's kept bytes) decoded first."""

    def __init__(self, encoded: bool, stack: bool) -> None:
        self.encoded, self.stack = encoded, stack

    def __call__(self, samples: list[dict]) -> tuple:
        if self.encoded:
            samples = [{**sample, "image": decode_blob(sample["image"])} for sample in samples]
        if self.stack:
            return collate_samples(samples)
        images = [torch.from_numpy(np.ascontiguousarray(sample["image"])) for sample in samples]
        labels = torch.tensor([int(sample["label"]) for sample in samples], dtype=torch.int64)
        return images, labels, torch.tensor([int(sample["id"]) for sample in samples], dtype=torch.int64)


def decode_blob(blob: Any) -> np.ndarray:
    """An image's stored bytes (bytes, or the ``(1, len)`` uint8 array a store keeps them as), decoded."""
    from .image_codec import decode

    return decode(memoryview(np.ascontiguousarray(blob)).cast("B") if isinstance(blob, np.ndarray) else bytes(blob))


def collate_pair_lists(samples: list) -> list:
    """``(image, label)`` samples of several sizes as ``[list of images, labels]``."""
    return [[image for image, _ in samples], torch.tensor([int(label) for _, label in samples], dtype=torch.int64)]


def _collate_for(store: Any) -> SampleCollate:
    encoded = getattr(store, "_encoding", None) is not None
    return SampleCollate(encoded, stack=store.uniform_shape is not None)


def cache_folder(store: Any) -> Path:
    """Where a remote store's workers reopen it (its cache folder), so that they fetch nothing again."""
    return Path(getattr(store, "cache", Path(store.path).parent))


class RemoteStoreDataset(StoreDataset):
    """:class:`~storage.torch.StoreDataset` over a store in object storage: each worker reopens it, fetching nothing."""

    def __init__(self, store: Any, transform: Callable | None = None) -> None:
        self.location: S3Location = store.location
        self.cache = cache_folder(store)
        self._first = store
        super().__init__(store.info.name, store.location.url, transform)
        self.fork_safe = getattr(type(store), "fork_safe", True)

    def _open_store(self) -> Any:
        first, self._first = getattr(self, "_first", None), None
        if first is not None:  # the store the caller opened: used once, in this process
            return _Unclosed(first)
        return reopen_remote(self.location, self.backend, self.cache)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_first"] = None
        return state


class _Unclosed:
    """The caller's store, for the dataset's check at start: closing it here leaves it to the caller."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __len__(self) -> int:
        return len(self._store)

    def __enter__(self) -> Any:
        return self._store

    def __exit__(self, *exc_info: object) -> None:
        """The caller closes its store."""


def make_s3_loader(
    store: Any, batch_size: int, num_workers: int = 0, *, seed: int = 0, timeout: float = LOADER_TIMEOUT
) -> DataLoader:
    """A shuffled loader over ``store`` (opened from an ``s3://`` URL), through its format's own dataset.

    Batches are ``(images, labels, ids)`` for the formats whose library orders the samples
    itself (WebDataset, LitData, MDS, Lance) and Parquet's row groups, else ``(images, labels)`` with the order in
    ``loader.sampler.last_order``.
    """
    batch_size, num_workers = check_loader_settings(batch_size, num_workers)
    builder = _BUILDERS.get(store.info.name)
    if builder is None:
        dataset = RemoteStoreDataset(store)
        options: dict[str, Any] = {"persistent_workers": num_workers > 0}
        if store.uniform_shape is None:
            options["collate_fn"] = collate_pair_lists
        return make_loader(dataset, batch_size, num_workers, seed=seed, timeout=timeout, **options)
    return builder(store, batch_size, num_workers, seed, timeout)


def _worker_options(num_workers: int, timeout: float) -> dict[str, Any]:
    if not num_workers:
        return {"num_workers": 0}
    return {"num_workers": num_workers, "timeout": timeout, "persistent_workers": True}


def _litdata_loader(store: Any, batch_size: int, num_workers: int, seed: int, timeout: float) -> DataLoader:
    from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset

    options = litdata_storage_options(store.location)
    datasets = [
        StreamingDataset(
            store.part_url(part),
            cache_dir=str(store.part_cache(part)),
            storage_options=options,
            shuffle=True,
            seed=seed,
        )
        for part in store.part_paths()
    ]
    dataset = (
        datasets[0] if len(datasets) == 1 else CombinedStreamingDataset(datasets, seed=seed, iterate_over_all=True)
    )
    return StreamingDataLoader(
        dataset, batch_size=batch_size, collate_fn=_collate_for(store), **_worker_options(num_workers, timeout)
    )


def _mds_loader(store: Any, batch_size: int, num_workers: int, seed: int, timeout: float) -> DataLoader:
    from streaming import Stream, StreamingDataset

    point_streaming_at(store.location)
    streams = [Stream(remote=store.part_url(part), local=str(store.part_cache(part))) for part in store.part_paths()]
    dataset = StreamingDataset(streams=streams, shuffle=True, shuffle_seed=seed, batch_size=batch_size)
    return DataLoader(
        dataset, batch_size=batch_size, collate_fn=_collate_for(store), **_worker_options(num_workers, timeout)
    )


def _lance_loader(store: Any, batch_size: int, num_workers: int, seed: int, timeout: float) -> DataLoader:
    from lance.sampler import ShardedBatchSampler
    from lance.torch.data import LanceDataset

    from .formats.lance_store import COLUMNS, FIXED_COLUMNS, _batch_tensors, _quiet_sampler_warning

    _quiet_sampler_warning()
    fixed_shape = store._fixed_shape  # one fixed-size column, as LanceStore.torch_dataset reads it
    encoded = getattr(store, "_encoding", None) is not None
    dataset = LanceDataset(
        store.dataset_uri,
        batch_size,
        dataset_options={
            "version": store.backend_state["version"],
            "storage_options": lance_storage_options(store.location),
        },
        columns=FIXED_COLUMNS if fixed_shape else COLUMNS,
        sampler=ShardedBatchSampler(0, 1, randomize=True, seed=seed),
        to_tensor_fn=_lance_encoded_rows if encoded else functools.partial(_batch_tensors, fixed_shape),
    )
    options = _worker_options(num_workers, timeout)
    if num_workers:
        options.update(worker_init_fn=type(store).torch_worker_init(seed), multiprocessing_context="spawn")
    return DataLoader(dataset, batch_size=None, **options)


def _lance_encoded_rows(batch: Any, **_: Any) -> tuple:
    """``(images, labels, ids)`` of Lance rows that keep encoded bytes: each row decoded, a list of image tensors."""
    import pyarrow as pa

    from .formats.parquet_store import binary_column

    table = pa.Table.from_batches([batch])
    offsets, data = binary_column(table.column("image"))
    images = [
        torch.from_numpy(np.ascontiguousarray(decode_blob(data[offsets[row] : offsets[row + 1]])))
        for row in range(len(offsets) - 1)
    ]
    labels = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    return images, labels, torch.from_numpy(table.column("id").to_numpy().astype(np.int64))


def _webdataset_loader(store: Any, batch_size: int, num_workers: int, seed: int, timeout: float) -> DataLoader:
    import webdataset as wds

    urls = store.shard_urls()
    dataset = (
        wds.WebDataset(urls, shardshuffle=len(urls), seed=seed, workersplitter=wds.split_by_worker, empty_check=False)
        .shuffle(SHUFFLE_BUFFER, seed=seed)
        .map(_webdataset_sample)
    )
    collate = SampleCollate(encoded=False, stack=store.uniform_shape is not None)  # members are decoded by the map
    return wds.WebLoader(dataset, batch_size=batch_size, collate_fn=collate, **_worker_options(num_workers, timeout))


def _webdataset_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A tar sample (``__key__``, the image member by its extension, ``cls``) as ``image``, ``label``, ``id``."""
    from .image_codec import decode

    image_id = int(sample["__key__"].rsplit("/", 1)[-1])
    label = int(sample["cls"])
    for name, data in sample.items():
        if name in ("__key__", "__url__", "__local_path__", "cls") or not isinstance(data, (bytes, bytearray)):
            continue
        image = np.load(io.BytesIO(data)) if name == "npy" else decode(bytes(data))
        return {"image": image, "label": label, "id": image_id}
    raise ValueError(f"sample {sample['__key__']} of a WebDataset shard holds no image member")


def _parquet_loader(store: Any, batch_size: int, num_workers: int, seed: int, timeout: float) -> DataLoader:
    from .formats.parquet_torch import ParquetRowGroups

    opener = functools.partial(reopen_remote, store.location, "parquet", cache_folder(store))
    dataset = ParquetRowGroups(store, opener, seed)
    collate = SampleCollate(encoded=False, stack=store.uniform_shape is not None)  # decoded as read
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, **_worker_options(num_workers, timeout))


_BUILDERS: dict[str, Callable[..., DataLoader]] = {
    "parquet": _parquet_loader,
    "webdataset": _webdataset_loader,
    "litdata": _litdata_loader,
    "mds": _mds_loader,
    "lance": _lance_loader,
}

__all__ = ["RemoteStoreDataset", "make_s3_loader"]
