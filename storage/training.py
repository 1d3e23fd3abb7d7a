"""DataLoaders as a training loop runs them: workers kept alive, every format the same shuffle, timed in parts.

    from storage.pipeline import Pipeline
    from storage.training import StoreSource, PipelineDataset, training_loader
    dataset = PipelineDataset(StoreSource("lmdb", "data/stores/photos"), Pipeline("train", "simplejpeg"))
    loader = training_loader(dataset, batch_size=256, num_workers=2, seed=0)
    for epoch in range(3):
        for images, labels, ids, stats in loader:   # images: (256, 3, 224, 224) uint8
            ...

* A *source* reads a batch of ids: :class:`StoreSource` from any store (its pixels, or the
  bytes a kept-bytes store holds, which the pipeline decodes in the worker),
  :class:`MemorySource` from pixels held in memory (the in-memory ceiling) and
  :class:`FileSource` from encoded files in the page cache (the decode ceiling: what any
  store of those bytes can deliver at most). They pickle for ``spawn`` workers.
* :class:`PipelineDataset` is the map-style dataset over a source: one read per batch
  (``__getitems__``), then the :class:`~storage.pipeline.Pipeline`'s decode and transform, in
  the worker. Each batch is ``(images, labels, ids, stats)``; ``stats`` holds the seconds the
  worker spent reading, decoding and transforming, and its process id (:data:`STATS`).
* :func:`training_loader` is its DataLoader: a full per-sample shuffle drawn in the main
  process (a seeded ``RandomSampler``, a new order every epoch), and with workers,
  ``persistent_workers=True``: the workers start once, in the first epoch, as in training,
  not in every epoch.
* :func:`own_order_loader` is a format's own dataset and sampler (LitData's, Streaming's,
  Lance's: the store class's ``torch_dataset`` hook, see :func:`storage.torch.make_store_loader`)
  with the same pipeline in its collate step and the same persistent workers: the order
  and the reads that library gives its users.

Importing this module imports torch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import registry
from .errors import ImageShapeError
from .pipeline import Pipeline
from .torch import (
    DEFAULT_TIMEOUT,
    LazyStore,
    LoaderSettingsError,
    RecordingRandomSampler,
    check_loader_settings,
    shared_batch_tensor,
)

STATS = ("read_seconds", "decode_seconds", "transform_seconds", "pid")
"""What each batch's ``stats`` tensor holds, in order (NaN where a part was not measured)."""

SHUFFLE_ORDER = "shuffle"  # every format: torch's RandomSampler over all ids, one read per batch
OWN_ORDER = "own"  # a format's own dataset and sampler, as its library's users load it
ORDERS = (SHUFFLE_ORDER, OWN_ORDER)


def batch_stats(read: float, decode: float, transform: float) -> torch.Tensor:
    return torch.tensor([read, decode, transform, float(os.getpid())], dtype=torch.float64)


def _as_given(batch: Any) -> Any:
    """The collate step of a dataset whose ``__getitems__`` already gives the whole batch."""
    return batch


# -- sources: what reads a batch of ids ------------------------------------------------


class StoreSource(LazyStore):
    """Reads batches of ids from a store (opened once per worker process).

    A store that keeps encoded bytes (``encoding`` other than ``"raw"``) gives its bytes
    (``read_encoded``), decoded by the pipeline in the worker; any other gives pixels.
    """

    def __init__(self, backend: str, path: str | os.PathLike[str]) -> None:
        self.count, self.uniform_shape = self._init_store(backend, path)
        with self._open_store() as store:
            encoding = getattr(store, "encoding", None)
            self.encoded = encoding is not None and not encoding.keeps_pixels and hasattr(store, "read_encoded")
            self.lossless = bool(getattr(store, "lossless", store.info.lossless))

    def __len__(self) -> int:
        return self.count

    def read(self, ids: np.ndarray, out: np.ndarray | None) -> tuple[Any, np.ndarray]:
        if self.encoded:
            data, _, labels = self.store.read_encoded(ids)
            return data, labels
        return self.store.read_batch(ids, out=out)

    def describe(self) -> str:
        what = "read_encoded" if self.encoded else "read_batch"
        return f"{what} of each batch's ids from the {self.backend} store"


class MemorySource:
    """Pixels held in memory: an (N,H,W[,C]) array, or distinct images and which one each id is."""

    fork_safe = True
    encoded = False
    lossless = True

    def __init__(self, images: np.ndarray | Sequence[np.ndarray], order: np.ndarray | None = None) -> None:
        self.images = images
        self.order = None if order is None else np.asarray(order, dtype=np.int64)
        self.count = len(self.order) if self.order is not None else len(images)
        uniform = isinstance(images, np.ndarray) and self.order is None
        self.uniform_shape = tuple(images.shape[1:]) if uniform else None

    def __len__(self) -> int:
        return self.count

    def read(self, ids: np.ndarray, out: np.ndarray | None) -> tuple[Any, None]:
        if self.order is None and out is not None:
            rows = self.images.reshape(len(self.images), -1)  # one row of bytes per image: a memcpy each
            np.take(rows, ids, axis=0, out=out.reshape(len(ids), -1))
            return out, None
        positions = ids if self.order is None else self.order[ids]
        return [self.images[position] for position in positions.tolist()], None

    def describe(self) -> str:
        return "pixels held in memory"


class FileSource:
    """Encoded image files, read whole from the file system (the page cache once read)."""

    fork_safe = True
    encoded = True
    lossless = True
    uniform_shape = None

    def __init__(self, paths: Sequence[str | os.PathLike[str]], order: np.ndarray | None = None) -> None:
        self.paths = [os.fspath(path) for path in paths]
        self.order = np.arange(len(self.paths)) if order is None else np.asarray(order, dtype=np.int64)
        self.count = len(self.order)

    def __len__(self) -> int:
        return self.count

    def read(self, ids: np.ndarray, out: np.ndarray | None) -> tuple[list[bytes], None]:
        return [_file_bytes(self.paths[file]) for file in self.order[ids].tolist()], None

    def describe(self) -> str:
        return f"the encoded files themselves ({len(set(self.order.tolist())):,} distinct), from the page cache"


def _file_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


# -- the dataset -----------------------------------------------------------------------


class PipelineDataset(Dataset):
    """A map-style dataset over a source: each batch read in one call, then decoded and transformed.

    ``labels`` (one per id) are used for sources that do not give their own (memory, files).
    """

    def __init__(self, source: Any, pipeline: Pipeline, labels: np.ndarray | None = None) -> None:
        self.source, self.pipeline = source, pipeline
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.fork_safe = getattr(source, "fork_safe", True)
        shape = getattr(source, "uniform_shape", None)
        if not pipeline.augments and shape is None and not isinstance(source, FileSource):
            raise ImageShapeError(
                "these images are of several sizes, and a batch is one tensor: give a transform that brings them "
                "to one size (transform 'train' or 'val')"
            )

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, indices: Sequence[int]) -> tuple:
        ids = np.asarray(indices, dtype=np.int64)
        source, pipeline = self.source, self.pipeline
        direct = not source.encoded and not pipeline.augments and not pipeline.on_device
        shape = pipeline.batch_shape(len(ids), source.uniform_shape)
        out = shared_batch_tensor(shape) if shape is not None and not pipeline.on_device else None
        started = time.perf_counter()
        items, labels = source.read(ids, out.numpy() if direct else None)
        read = time.perf_counter() - started
        labels = self.labels[ids] if labels is None else np.asarray(labels, dtype=np.int64)
        if pipeline.on_device:  # decoded and transformed in the training process (see finish_batch)
            return list(items), torch.from_numpy(labels), torch.from_numpy(ids), batch_stats(read, 0.0, 0.0)
        if direct:
            images, decode, transform = self._placed(items, out), 0.0, 0.0
        else:
            images, decode, transform = pipeline.batch(list(items), out, source.encoded, source.uniform_shape)
        return images, torch.from_numpy(labels.copy()), torch.from_numpy(ids), batch_stats(read, decode, transform)

    @staticmethod
    def _placed(images: Any, out: torch.Tensor) -> torch.Tensor:
        buffer = out.numpy()
        if not (isinstance(images, np.ndarray) and np.shares_memory(images, buffer)):
            buffer[...] = images
        return out

    def __getitem__(self, index: int) -> tuple:
        return self.__getitems__([int(index)])

    def close(self) -> None:
        """Close this process's store, if the source holds one (it opens again on the next read)."""
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"PipelineDataset({self.source.describe()}, {self.pipeline.describe()})"


def finish_batch(batch: tuple, pipeline: Pipeline, encoded: bool) -> tuple:
    """In the training process: decode and transform a batch on the CUDA device (a no-op otherwise)."""
    if not pipeline.on_device:
        return batch
    items, labels, ids, stats = batch
    images, decode, transform = pipeline.batch_on_device(items, encoded)
    stats = stats.clone()
    stats[1], stats[2] = decode, transform
    return images, labels, ids, stats


def training_loader(
    dataset: PipelineDataset,
    batch_size: int,
    num_workers: int = 0,
    *,
    seed: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **options: Any,
) -> DataLoader:
    """A DataLoader over ``dataset`` with a full per-sample shuffle and, with workers, persistent workers.

    The sampler (a :class:`~storage.torch.RecordingRandomSampler` seeded by ``seed``) draws a
    new order every epoch. Workers over a source that must not be forked start with
    ``spawn``. ``options`` go to the DataLoader.
    """
    batch_size, num_workers = check_loader_settings(batch_size, num_workers)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    options.setdefault("sampler", RecordingRandomSampler(dataset, generator=generator))
    options.setdefault("collate_fn", _as_given)
    return DataLoader(
        dataset, batch_size=batch_size, **_worker_options(num_workers, dataset.fork_safe, timeout, options)
    )


def close_loader(loader: DataLoader) -> None:
    """Shut down a loader's persistent workers now, rather than whenever it is collected (a format's own
    loader, :class:`OwnLoaderBatches`, is closed)."""
    if isinstance(loader, OwnLoaderBatches):
        loader.close()
        return
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    if hasattr(loader, "_iterator"):
        loader._iterator = None
    close = getattr(getattr(loader, "dataset", None), "close", None)
    if callable(close):
        close()


def _worker_options(num_workers: int, fork_safe: bool, timeout: float, options: dict[str, Any]) -> dict[str, Any]:
    options["num_workers"] = num_workers
    if num_workers:
        options.setdefault("persistent_workers", True)
        options.setdefault("timeout", timeout)
        if options.get("multiprocessing_context") is None and not fork_safe:
            options["multiprocessing_context"] = "spawn"
    else:
        options.pop("timeout", None)
        options.pop("persistent_workers", None)
    return options


# -- a format's own order --------------------------------------------------------------


class OwnOrderCollate:
    """The collate step of a format's own dataset: its samples decoded and transformed, in the worker.

    Samples are dicts (``image``: pixels, or the kept bytes as a uint8 array; ``label``; ``id``),
    or, for a dataset that yields whole batches (``batched``), ``(images, labels, ids)``; or
    rows that the format's own collate (``rows``) makes ``(images, labels, ids)``.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        encoded: bool,
        shape: tuple[int, ...] | None,
        batched: bool,
        rows: Callable[[list], tuple] | None = None,
    ) -> None:
        self.pipeline, self.encoded, self.shape, self.batched, self.rows = pipeline, encoded, shape, batched, rows

    def __call__(self, samples: Any) -> tuple:
        if self.rows is not None:  # the format's own collate of its rows (Hugging Face's: (C,H,W) tensors)
            images, labels, ids = self.rows(samples)
        elif self.batched:
            images, labels, ids = samples
        else:
            images = [np.asarray(sample["image"]) for sample in samples]
            labels = torch.tensor([int(sample["label"]) for sample in samples], dtype=torch.int64)
            ids = torch.tensor([int(sample["id"]) for sample in samples], dtype=torch.int64)
        labels, ids = torch.as_tensor(labels, dtype=torch.int64), torch.as_tensor(ids, dtype=torch.int64)
        pipeline = self.pipeline
        if pipeline.on_device:
            return list(images), labels, ids, batch_stats(math.nan, 0.0, 0.0)
        if isinstance(images, torch.Tensor) and not self.encoded and not pipeline.augments:
            return images, labels, ids, batch_stats(math.nan, 0.0, 0.0)  # the format's own batch, as it gave it
        shape = pipeline.batch_shape(len(ids), self.shape)
        out = shared_batch_tensor(shape) if shape is not None else None
        items = list(images) if not isinstance(images, torch.Tensor) else [image.numpy() for image in images]
        batch, decode, transform = pipeline.batch(items, out, self.encoded, self.shape)
        return batch, labels, ids, batch_stats(math.nan, decode, transform)


def own_order_loader(
    backend: str,
    path: str | os.PathLike[str],
    batch_size: int,
    num_workers: int,
    pipeline: Pipeline,
    *,
    seed: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[DataLoader, str]:
    """The format's own dataset and sampler with ``pipeline`` in its collate step, and how it orders samples.

    Raises:
        LoaderSettingsError: the format has no dataset of its own (no ``torch_shuffles`` hook).
    """
    batch_size, num_workers = check_loader_settings(batch_size, num_workers)
    store_class = registry.store_class(backend)
    if not has_own_order(backend):
        raise LoaderSettingsError(f"the {backend} backend has no dataset of its own; load it with training_loader")
    encoded, shape = _stored_as(backend, path, pipeline)
    dataset = store_class.torch_dataset(path, seed=seed, batch_size=batch_size)
    batched = bool(getattr(store_class, "torch_batches", False))
    options: dict[str, Any] = {"collate_fn": OwnOrderCollate(pipeline, encoded, shape, batched)}
    options["batch_size"] = None if batched else batch_size
    worker_init = getattr(store_class, "torch_worker_init", None)
    if num_workers and worker_init is not None:
        options["worker_init_fn"] = worker_init(seed)
    options = _worker_options(num_workers, getattr(store_class, "fork_safe", True), timeout, options)
    loader_class = getattr(store_class, "torch_loader_class", DataLoader)
    return loader_class(dataset, **options), own_order_description(backend, dataset, loader_class)


def shuffle_loader(
    backend: str,
    path: str | os.PathLike[str],
    batch_size: int,
    num_workers: int,
    pipeline: Pipeline,
    *,
    seed: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Any, str]:
    """``backend``'s store in a full per-sample shuffle, and what reads it.

    Through :class:`PipelineDataset` over a :class:`StoreSource` (one ``read_batch`` or
    ``read_encoded`` per batch); for a format whose library has a map-style dataset of its
    own (a ``torch_dataset`` hook without ``torch_shuffles``: Hugging Face's) and keeps pixels,
    through that dataset, its samples decoded and transformed by the pipeline in the collate
    step; for a format loaded by a loader of its own (a ``torch_loader`` hook: FFCV's), through
    that loader, made once and kept for every epoch (:class:`OwnLoaderBatches`).
    """
    store_class = registry.store_class(backend)
    if getattr(store_class, "torch_loader", None) is not None:
        return own_loader_batches(backend, path, batch_size, num_workers, pipeline, seed=seed)
    own_dataset = getattr(store_class, "torch_dataset", None)
    shuffle = "torch RandomSampler (a full per-sample shuffle)"
    encoded, shape = _stored_as(backend, path, pipeline)
    if own_dataset is None or has_own_order(backend) or encoded:
        source = StoreSource(backend, path)
        loader = training_loader(PipelineDataset(source, pipeline), batch_size, num_workers, seed=seed, timeout=timeout)
        return loader, f"{source.describe()}; {shuffle}"
    dataset = own_dataset(path)
    rows = getattr(store_class, "torch_collate", None)
    options = {"collate_fn": OwnOrderCollate(pipeline, encoded, shape, batched=rows is not None, rows=rows)}
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    options["sampler"] = RecordingRandomSampler(dataset, generator=generator)
    fork_safe = getattr(store_class, "fork_safe", True)
    loader = DataLoader(dataset, batch_size=batch_size, **_worker_options(num_workers, fork_safe, timeout, options))
    kind = type(dataset)
    return loader, f"{kind.__module__.split('.')[0]}.{kind.__qualname__} (the format's own dataset); {shuffle}"


class OwnLoaderBatches:
    """A format's own loader (not a DataLoader: FFCV's ``Loader``), kept for every epoch, its batches as
    :class:`PipelineDataset` gives them: ``(images, labels, ids, stats)``.

    FFCV reuses its batch buffers: what a caller keeps must be copied before the next batches
    arrive (the ``loader`` operation copies every batch as it comes). FFCV's workers are
    threads of this process and it decodes in its own pipeline, so there are no worker
    figures (``stats`` NaN, this process's id).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, ids in self.loader:
            yield images, labels, ids, batch_stats(math.nan, math.nan, math.nan)

    def close(self) -> None:
        for loader in getattr(self.loader, "loaders", [self.loader]):
            close = getattr(loader, "close", None)
            if callable(close):
                close()


def own_loader_batches(
    backend: str,
    path: str | os.PathLike[str],
    batch_size: int,
    num_workers: int,
    pipeline: Pipeline,
    *,
    seed: int | None = None,
) -> tuple[OwnLoaderBatches, str]:
    """The store class's own loader (``torch_loader``), once, and what it is.

    Raises:
        LoaderSettingsError: a transform or a decoder was asked for; the library decodes and
            augments in its own pipeline (FFCV's ``RandomResizedCropRGBImageDecoder`` ...).
    """
    batch_size, num_workers = check_loader_settings(batch_size, num_workers)
    if pipeline.augments or pipeline.on_device:
        raise LoaderSettingsError(
            f"not measured: the {backend} backend loads with its library's own loader, which decodes and augments in "
            "its own pipeline; this run's transform and decoder run in DataLoader workers (give --transform none)"
        )
    store_class = registry.store_class(backend)
    loader = store_class.torch_loader(path, batch_size, num_workers, seed=seed)
    kind = type(loader)
    what = f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"
    return OwnLoaderBatches(loader), f"{what} (the format's own loader, kept for every epoch; its own full shuffle)"


def _stored_as(backend: str, path: str | os.PathLike[str], pipeline: Pipeline) -> tuple[bool, tuple[int, ...] | None]:
    """Whether the store keeps encoded bytes, and its one image shape; refuses mixed sizes without a transform."""
    with registry.open_store(backend, path, "r") as store:
        encoding = getattr(store, "encoding", None)
        encoded = encoding is not None and not encoding.keeps_pixels
        shape = store.uniform_shape
    if not pipeline.augments and shape is None:
        raise ImageShapeError(
            f"the {backend} store holds images of several sizes, and a batch is one tensor: "
            "give a transform that brings them to one size (transform 'train' or 'val')"
        )
    return encoded, shape


def has_own_order(backend: str) -> bool:
    """Whether ``backend``'s library loads it with a dataset and sampler of its own (``torch_shuffles``)."""
    return bool(getattr(registry.store_class(backend), "torch_shuffles", False))


def own_order_description(backend: str, dataset: Any, loader_class: type) -> str:
    """``module.Class`` of the format's dataset and loader, and the order its sampler gives (``torch_order``)."""
    order = getattr(registry.store_class(backend), "torch_order", "the library's own order")
    kind = type(dataset)
    return f"{kind.__module__.split('.')[0]}.{kind.__qualname__} in {loader_class.__qualname__}: {order}"


def written_files(folder: Path, items: Sequence[tuple[str, bytes]]) -> list[str]:
    """Write ``(name, bytes)`` items as files in ``folder`` (made if missing); their paths, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in items:
        path = folder / name
        path.write_bytes(data)
        paths.append(str(path))
    return paths


__all__ = [
    "ORDERS",
    "OWN_ORDER",
    "SHUFFLE_ORDER",
    "STATS",
    "FileSource",
    "MemorySource",
    "OwnLoaderBatches",
    "OwnOrderCollate",
    "PipelineDataset",
    "StoreSource",
    "batch_stats",
    "close_loader",
    "finish_batch",
    "has_own_order",
    "own_loader_batches",
    "own_order_loader",
    "shuffle_loader",
    "training_loader",
    "written_files",
]
