"""PyTorch datasets over any registered store: what a training loop reads through.

    from storage.torch import StoreDataset, make_loader
    dataset = StoreDataset("lmdb", "data/stores/cifar")
    for images, labels in make_loader(dataset, batch_size=256, num_workers=2):
        ...  # images: (256, 32, 32, 3) uint8 tensor, labels: (256,) int64 tensor

* :class:`StoreDataset` is a map-style dataset: ``dataset[i]`` is ``(image, label)`` with the
  image a ``torch.uint8`` (H,W,C) tensor. It holds only the backend name and the path, so
  it pickles for ``spawn``/``forkserver`` workers, and it opens the store on first use in
  each process (handles do not survive ``fork``), once, so ``persistent_workers=True``
  keeps one open store per worker. PyTorch's DataLoader calls ``__getitems__`` with a
  whole batch of ids: it answers with one ``read_batch`` call, straight into a tensor (in
  shared memory inside a worker, so the batch reaches the main process without a copy).
* :func:`collate` hands that batch over as it is; torch's ``default_collate`` also works,
  one image at a time, at the cost of a copy per batch. :func:`make_loader` builds a
  DataLoader with it, checks the batch size and worker count, and sets a ``timeout`` so a
  stuck worker is an error, never a hang.
* :class:`StoreIterableDataset` streams ids in order (what tar shards such as WebDataset's
  do best), split into contiguous blocks across DataLoader workers and distributed ranks
  so that every id is read exactly once per epoch, with a seeded shuffle buffer.
* Both open their store with :func:`storage.open_store`, so they take a sharded store
  (:mod:`storage.sharded`) as backend ``"sharded"``; the iterable one then hands whole
  shards to ranks and workers, so each shard is read by one worker of one rank.
* :func:`make_store_loader` is one shuffled epoch of a store read the way its format's
  users read it: a format whose library ships its own dataset class (LitData, Streaming,
  Lance) says so with optional attributes of its store class (``torch_dataset``, ...),
  which only this module looks up; every other format is read through :class:`StoreDataset`.
* :class:`MemoryDataset` is the same batched path over images already in memory: the
  ceiling a DataLoader reaches on this machine when storage costs nothing.

Importing this module imports torch; ``import storage`` does not.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, TensorDataset, get_worker_info
from torch.utils.data import default_collate as torch_default_collate

from . import registry
from .base import ImageStore, current_pid
from .errors import ImageShapeError, StorageError
from .opener import open_store
from .sharded import ShardedStore, ShardInfo

DEFAULT_TIMEOUT = 120.0  # seconds a worker may take for one batch before the loader gives up
DEFAULT_READ_SIZE = 256  # ids per read_batch call when streaming in order


class LoaderSettingsError(StorageError, ValueError):
    """A DataLoader setting that cannot work: a batch size below 1, a negative worker count, ..."""


class TransformError(StorageError, RuntimeError):
    """A dataset's transform raised on an image; the message names the transform and the image."""


def check_loader_settings(batch_size: object, num_workers: object) -> tuple[int, int]:
    """Refuse a batch size below 1 and a negative worker count, saying what to give instead."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise LoaderSettingsError(
            f"batch size {batch_size!r} is not a positive whole number: give at least 1 image per batch"
        )
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise LoaderSettingsError(
            f"worker count {num_workers!r} is not a whole number of 0 or more: "
            "give 0 (read in the main process) or the number of worker processes"
        )
    return int(batch_size), int(num_workers)


def shared_batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, in shared memory.

    A tensor a worker returns is moved to shared memory to reach the main process; made
    there from the start, the move costs nothing (``default_collate`` does the same).
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    try:
        storage = torch.UntypedStorage._new_shared(math.prod(shape))
    except AttributeError:  # a torch without the private helper: a copy, but still correct
        return torch.empty(shape, dtype=torch.uint8).share_memory_()
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    """The image as a uint8 tensor sharing its memory (copied only if the array is read-only)."""
    if not image.flags.writeable:
        image = image.copy()
    return torch.from_numpy(image)


class SampleBatch(Sequence):
    """A batch read in one call: stacked ``images`` (N,H,W,C) and ``labels`` (N,) tensors.

    It is also the sequence of ``(image, label)`` samples a DataLoader expects from
    ``__getitems__``, so torch's default collate works on it; :func:`collate` skips
    that step and returns the two tensors as they are.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.images[index], int(self.labels[index])


def collate(batch: Any) -> Any:
    """``[images, labels]`` of a :class:`SampleBatch` without a copy; else torch's ``default_collate``."""
    if isinstance(batch, SampleBatch):
        return [batch.images, batch.labels]
    try:
        return torch_default_collate(batch)
    except RuntimeError:
        _check_one_image_size(batch)  # torch's own error only says "stack expects each tensor to be equal size"
        raise


def _check_one_image_size(samples: Any) -> None:
    """Refuse a batch of differently sized images, saying what to do; looked at only once collating failed."""
    if not isinstance(samples, (list, tuple)):
        return
    shapes = sorted({tuple(sample[0].shape) for sample in samples if isinstance(sample, (list, tuple)) and sample
                     and isinstance(sample[0], torch.Tensor)})  # fmt: skip
    _refuse_sizes(shapes)


def _refuse_sizes(shapes: list[tuple[int, ...]]) -> None:
    if len(shapes) > 1:
        raise ImageShapeError(
            f"a batch cannot stack images of {len(shapes)} sizes ({shapes[0]} and {shapes[-1]}, among others): "
            "give the dataset a transform that brings them to one size (e.g. torchvision's Resize; "
            "storage.training.training_loader takes one), or use batch_size=1, "
            "or pass collate_fn=list to get lists of samples"
        ) from None


def collate_samples(samples: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, ids)`` tensors of dict samples (``image``, ``label``, ``id``).

    The peer formats (LitData, MDS) store their samples this way and shuffle inside their
    own datasets, so the ids say which image each sample is.
    """
    arrays = [np.asarray(sample["image"]) for sample in samples]
    try:
        images = torch.from_numpy(np.stack(arrays))
    except ValueError:
        _refuse_sizes(sorted({array.shape for array in arrays}))  # np.stack's own error names no way out
        raise
    labels = torch.tensor([int(sample["label"]) for sample in samples], dtype=torch.int64)
    ids = torch.tensor([int(sample["id"]) for sample in samples], dtype=torch.int64)
    return images, labels, ids


def _transform_name(transform: Callable) -> str:
    return getattr(transform, "__qualname__", None) or type(transform).__name__


class LazyStore:
    """Opens the store on first use in each process, and only once there."""

    backend: str
    path: Path

    def _init_store(self, backend: str, path: str | os.PathLike[str]) -> tuple[int, tuple[int, ...] | None]:
        """Open the store once here to check it (a missing store fails now, not in a worker)."""
        self.backend, self.path = backend, Path(path)
        self._store: ImageStore | ShardedStore | None = None
        self._store_pid: int | None = None
        with self._open_store() as store:  # an unknown backend: the error lists the known ones
            self.shards: tuple[ShardInfo, ...] | None = store.shards if isinstance(store, ShardedStore) else None
            self.fork_safe = registry.store_class(store.info.name).fork_safe  # a sharded store's: its shards'
            return len(store), store.uniform_shape

    def _open_store(self) -> ImageStore | ShardedStore:
        return open_store(self.backend, self.path, "r")

    @property
    def store(self) -> ImageStore | ShardedStore:
        """This process's open store (a forked worker opens its own on first use)."""
        if self._store is None or self._store_pid != current_pid():
            self._store = self._open_store()
            self._store_pid = current_pid()
        return self._store

    def close(self) -> None:
        """Close this process's store; it opens again on the next read."""
        if self._store is not None and self._store_pid == os.getpid():
            self._store.close()
        self._store = self._store_pid = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the backend name and path, never an open handle."""
        state = self.__dict__.copy()
        state["_store"] = state["_store_pid"] = None
        return state

    def _apply(self, transform: Callable | None, image: torch.Tensor, image_id: int) -> Any:
        if transform is None:
            return image
        try:
            return transform(image)
        except Exception as error:
            raise TransformError(
                f"the transform {_transform_name(transform)} raised {type(error).__name__}: {error} "
                f"on image {image_id} of the {self.backend} store at {self.path}; fix the transform "
                "(it receives a uint8 (H,W,C) tensor)"
            ) from error


class StoreDataset(LazyStore, Dataset):
    """A map-style PyTorch dataset over a store: ``dataset[i]`` is ``(image, label)``.

    Args:
        backend: a registered backend name, or ``"sharded"`` for a sharded store (global ids).
        path: the store's folder (opened read-only; checked here, so a missing store fails
            at once with :class:`~storage.errors.StoreNotFoundError`, and a sharded store with
            a bad shard with :class:`~storage.errors.BadShardError` naming it).
        transform: called with each image as a uint8 (H,W,C) tensor; what it returns is
            the sample's image. With a transform, batches are collated one sample at a time.

    Raises:
        UnknownBackendError, StoreNotFoundError, IncompleteStoreError: from opening the store.
        TypeError: ``transform`` is not callable.
    """

    def __init__(
        self, backend: str, path: str | os.PathLike[str], transform: Callable[[torch.Tensor], Any] | None = None
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform {transform!r} is not callable; give a function of one image tensor, or None")
        self.transform = transform
        self._length, self.uniform_shape = self._init_store(backend, path)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image_id = int(index) + (self._length if int(index) < 0 else 0)
        image, label = self.store.read_one(image_id)
        return self._apply(self.transform, _as_tensor(image), image_id), int(label)

    def __getitems__(self, indices: Sequence[int]) -> SampleBatch | list[tuple[Any, int]]:
        """A whole batch in one ``read_batch`` call (PyTorch's DataLoader calls this per batch)."""
        ids = np.asarray(indices, dtype=np.int64)
        if self.transform is not None or self.uniform_shape is None:
            images, labels = self.store.read_batch(ids)
            return [
                (self._apply(self.transform, _as_tensor(np.asarray(image)), int(image_id)), int(label))
                for image_id, image, label in zip(ids.tolist(), images, labels)
            ]
        out = shared_batch_tensor((len(ids), *self.uniform_shape))
        buffer = out.numpy()
        images, labels = self.store.read_batch(ids, out=buffer)
        if not (isinstance(images, np.ndarray) and np.shares_memory(images, buffer)):
            buffer[...] = images
        return SampleBatch(out, torch.from_numpy(np.array(labels, dtype=np.int64)))

    def __repr__(self) -> str:
        return f"StoreDataset({self.backend!r}, {str(self.path)!r}, images={self._length})"


class MemoryDataset(TensorDataset):
    """Images already in memory, read through the same batched path as :class:`StoreDataset`.

    The "no storage" ceiling: a DataLoader over it measures what the loader itself
    (sampling, worker processes, moving batches between processes) delivers here.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> None:
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim < 3 or not images.is_contiguous():
            raise TypeError(
                f"images must be a contiguous (N,H,W[,C]) uint8 array, got {images.dtype} of shape {tuple(images.shape)}"
            )
        super().__init__(images, torch.as_tensor(labels, dtype=torch.int64))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.tensors
        return images[index], int(labels[index])

    def __getitems__(self, indices: Sequence[int]) -> SampleBatch:
        images, labels = self.tensors
        ids = np.asarray(indices, dtype=np.int64)
        out = shared_batch_tensor((len(ids), *images.shape[1:]))
        rows = images.numpy().reshape(len(images), -1)  # one row of bytes per image: a memcpy each
        np.take(rows, ids, axis=0, out=out.numpy().reshape(len(ids), -1))
        return SampleBatch(out, labels[torch.from_numpy(ids)])


class RecordingRandomSampler(RandomSampler):
    """``shuffle=True``'s sampler, remembering the order of its last epoch in ``last_order``.

    Ids are drawn in the main process even when workers read, so the order is known there
    and what the loader delivered can be checked against the source afterwards.
    """

    last_order: list[int]

    def __iter__(self) -> Iterator[int]:
        self.last_order = list(super().__iter__())
        return iter(self.last_order)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **options: Any,
) -> DataLoader:
    """A DataLoader over ``dataset`` with the batched path (:func:`collate`) and a timeout.

    Args:
        dataset: a :class:`StoreDataset`, :class:`MemoryDataset` or any map-style dataset.
        batch_size: images per batch (at least 1).
        num_workers: worker processes (0 reads in the main process).
        shuffle: a new random order every epoch (a :class:`RecordingRandomSampler`).
        seed: seeds the shuffle, so an epoch's order can be repeated.
        timeout: seconds to wait for a worker's batch before raising (workers only), so a
            stuck worker is an error; a worker that dies is reported by PyTorch at once.
        options: passed to ``DataLoader`` (``persistent_workers``, ``multiprocessing_context``, ...).
            Without a ``multiprocessing_context``, workers over a dataset whose format is not
            fork-safe (``fork_safe`` False, e.g. Lance) are started with ``spawn``.

    Raises:
        LoaderSettingsError: a batch size below 1 or a negative worker count.
    """
    batch_size, num_workers = check_loader_settings(batch_size, num_workers)
    if shuffle:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        options["sampler"] = RecordingRandomSampler(dataset, generator=generator)
    options.setdefault("collate_fn", collate)
    if num_workers and options.get("multiprocessing_context") is None and not getattr(dataset, "fork_safe", True):
        options["multiprocessing_context"] = "spawn"
    return DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, timeout=timeout if num_workers else 0, **options
    )


def store_dataset(
    backend: str, path: str | os.PathLike[str], transform: Callable | None = None, **settings: Any
) -> Any:
    """The dataset a training loop reads ``backend``'s store at ``path`` with.

    A format whose library ships its own dataset class says so with a ``torch_dataset``
    classmethod on its store class (looked up here; :class:`~storage.base.ImageStore` has
    none), called with ``path``, ``transform`` and ``settings``; every other format is read
    through :class:`StoreDataset`, which takes no ``settings``.
    """
    own_dataset = getattr(registry.store_class(backend), "torch_dataset", None)
    if own_dataset is None:
        return StoreDataset(backend, path, transform, **settings)
    return own_dataset(path, transform, **settings)


def make_store_loader(
    backend: str,
    path: str | os.PathLike[str],
    batch_size: int,
    num_workers: int = 0,
    *,
    seed: int | None = None,
    **options: Any,
) -> DataLoader:
    """One shuffled epoch of ``backend``'s store at ``path``, read the way its format's users read it.

    By default :func:`make_loader` over :func:`store_dataset`: a shuffled DataLoader whose
    sampler records the order (``loader.sampler.last_order``), batches ``(images, labels)``.
    A store class may change that with these optional attributes (none is on ``ImageStore``,
    so a format needs no import of this module):

    * ``torch_dataset`` (classmethod): its library's own dataset; see :func:`store_dataset`.
    * ``torch_shuffles = True``: that dataset orders the samples and splits them among the
      workers itself. It is then made with ``seed=`` (None: its library's default) and
      ``batch_size=``, no sampler is used, and its dict samples (``image``, ``label``, ``id``)
      are collated by :func:`collate_samples`: batches are ``(images, labels, ids)``.
    * ``torch_batches = True``: that dataset yields whole ``(images, labels, ids)`` batches
      itself (the DataLoader then batches nothing: ``batch_size=None``).
    * ``torch_loader_class``: the DataLoader class its users load with (LitData's
      ``StreamingDataLoader``); torch's ``DataLoader`` by default.
    * ``torch_worker_init(seed)`` (classmethod): the ``worker_init_fn`` of a loader with workers.
    * ``torch_collate``: the ``collate_fn`` for the rows of its own dataset when the sampler
      orders it (Hugging Face's rows are dicts of (C,H,W) tensors); batches are then what it gives.
    * ``torch_loader(path, batch_size, num_workers, seed=..., **options)`` (classmethod): a
      library that loads with a loader of its own, not a DataLoader (FFCV's ``Loader``), makes
      it here; it yields ``(images, labels, ids)`` batches.

    Workers over a format that is not fork-safe (``fork_safe`` False) are started with
    ``spawn`` unless ``options`` give a ``multiprocessing_context``; ``options`` go to the
    DataLoader (``timeout``, ...; a ``timeout`` is dropped when there are no workers).

    Raises:
        LoaderSettingsError: a batch size below 1 or a negative worker count.
        UnknownBackendError, StoreNotFoundError, ...: from opening the store.
    """
    batch_size, num_workers = check_loader_settings(batch_size, num_workers)
    store_class = registry.store_class(backend)
    own_loader = getattr(store_class, "torch_loader", None)
    if own_loader is not None:
        return own_loader(path, batch_size, num_workers, seed=seed, **options)
    if not getattr(store_class, "torch_shuffles", False):
        collate = getattr(store_class, "torch_collate", None)
        if collate is not None:
            options.setdefault("collate_fn", collate)
        return make_loader(store_dataset(backend, path), batch_size, num_workers, seed=seed, **options)
    dataset = store_class.torch_dataset(path, seed=seed, batch_size=batch_size)
    loader_class = getattr(store_class, "torch_loader_class", DataLoader)
    return loader_class(dataset, **_own_order_options(store_class, batch_size, num_workers, seed, options))


def _own_order_options(
    store_class: type, batch_size: int, num_workers: int, seed: int | None, options: dict[str, Any]
) -> dict[str, Any]:
    """The DataLoader arguments for a format's dataset that orders and splits its samples itself."""
    if getattr(store_class, "torch_batches", False):
        options["batch_size"] = None
    else:
        options.update(batch_size=batch_size, collate_fn=collate_samples)
    options["num_workers"] = num_workers
    if not num_workers:
        options.pop("timeout", None)
        return options
    worker_init = getattr(store_class, "torch_worker_init", None)
    if worker_init is not None:
        options.setdefault("worker_init_fn", worker_init(seed))
    if options.get("multiprocessing_context") is None and not getattr(store_class, "fork_safe", True):
        options["multiprocessing_context"] = "spawn"
    return options


def _rank_and_world_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed's when it is initialised, else one process."""
    if rank is None and world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise LoaderSettingsError("give both rank and world_size, or neither (then torch.distributed decides)")
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise LoaderSettingsError(f"{name} {value!r} is not a whole number")
    if world_size < 1 or not 0 <= rank < world_size:
        raise LoaderSettingsError(
            f"rank {rank} of world_size {world_size}: need world_size >= 1 and 0 <= rank < world_size"
        )
    return int(rank), int(world_size)


def block(count: int, part: int, parts: int) -> range:
    """The ``part``-th of ``parts`` contiguous, near-equal blocks of ``range(count)``."""
    return range(count * part // parts, count * (part + 1) // parts)


class StoreIterableDataset(LazyStore, IterableDataset):
    """Streams a store in id order, split across DataLoader workers and distributed ranks.

    The ids are cut into ``world_size x num_workers`` contiguous blocks; worker ``w`` of
    rank ``r`` reads block ``r * num_workers + w`` in ``read_size`` runs of consecutive
    ids (sequential reads, what tar shards do best), so in one epoch every id is read
    exactly once across all ranks and workers. With ``shuffle_buffer`` > 0 the runs are
    read in a seeded random order and samples leave through a seeded buffer of that size
    (WebDataset's way of shuffling a stream).

    A sharded store (backend ``"sharded"``) is split by whole shards instead: rank ``r`` of
    ``world_size`` takes shards ``r``, ``r + world_size``, ..., and its worker ``w`` of
    ``num_workers`` every ``num_workers``-th of those, so each shard is read, in order, by
    one worker of one rank. It needs at least ``world_size x num_workers`` shards.

    Args:
        backend, path, transform: as for :class:`StoreDataset`.
        shuffle_buffer: samples held for shuffling (0: id order).
        seed: seeds the shuffle together with the epoch (:meth:`set_epoch`) and the block.
        rank, world_size: this process's place among distributed processes; by default
            ``torch.distributed``'s when it is initialised, else 0 of 1.
        read_size: consecutive ids per ``read_batch`` call.
        return_ids: yield ``(image, label, id)`` instead of ``(image, label)``.
    """

    def __init__(
        self,
        backend: str,
        path: str | os.PathLike[str],
        transform: Callable[[torch.Tensor], Any] | None = None,
        *,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        read_size: int = DEFAULT_READ_SIZE,
        return_ids: bool = False,
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform {transform!r} is not callable; give a function of one image tensor, or None")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise LoaderSettingsError(f"shuffle_buffer {shuffle_buffer!r} is not a whole number of 0 or more")
        if isinstance(read_size, bool) or not isinstance(read_size, int) or read_size < 1:
            raise LoaderSettingsError(f"read_size {read_size!r} is not a positive whole number")
        self.rank, self.world_size = _rank_and_world_size(rank, world_size)
        self.transform, self.shuffle_buffer, self.seed = transform, shuffle_buffer, int(seed)
        self.read_size, self.return_ids, self.epoch = read_size, return_ids, 0
        self._count, _ = self._init_store(backend, path)
        if self.shards is not None and len(self.shards) < self.world_size:
            raise LoaderSettingsError(
                f"{len(self.shards)} shard(s) cannot feed {self.world_size} ranks: each rank reads whole shards; "
                "convert the store into more shards, or use fewer ranks"
            )

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call before each epoch, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Samples this rank yields in one epoch (over all its workers)."""
        if self.shards is not None:
            return sum(shard.count for shard in self.shards[self.rank :: self.world_size])
        return len(block(self._count, self.rank, self.world_size))

    def ranges_for(self, worker: int, num_workers: int) -> list[range]:
        """The id ranges worker ``worker`` of ``num_workers`` reads for this rank: one block, or its whole shards."""
        if self.shards is None:
            return [block(self._count, self.rank * num_workers + worker, self.world_size * num_workers)]
        parts = self.world_size * num_workers
        if len(self.shards) < parts:
            raise LoaderSettingsError(
                f"{len(self.shards)} shard(s) cannot feed {num_workers} DataLoader worker(s) on each of "
                f"{self.world_size} rank(s): each worker reads whole shards, so {parts} are needed; "
                "convert the store into more shards, or use fewer workers"
            )
        return [shard.ids for shard in self.shards[self.rank + self.world_size * worker :: parts]]

    def ids_for(self, worker: int, num_workers: int) -> range | list[int]:
        """The ids worker ``worker`` of ``num_workers`` reads for this rank (a list for sharded stores)."""
        ranges = self.ranges_for(worker, num_workers)
        return ranges[0] if self.shards is None else [i for ids in ranges for i in ids]

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        ranges = self.ranges_for(worker, num_workers)
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank * num_workers + worker}")
        samples = self._read_runs(ranges, rng)
        if self.shuffle_buffer > 0:
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        return samples

    def _read_runs(self, ranges: list[range], rng: random.Random) -> Iterator[tuple]:
        runs = [(start, min(start + self.read_size, ids.stop)) for ids in ranges for start in ids[:: self.read_size]]
        if self.shuffle_buffer > 0:
            rng.shuffle(runs)
        for start, stop in runs:
            run = np.arange(start, stop)
            images, labels = self.store.read_batch(run)
            for image_id, image, label in zip(run.tolist(), images, labels.tolist()):
                sample = self._apply(self.transform, _as_tensor(np.asarray(image)), image_id)
                yield (sample, label, image_id) if self.return_ids else (sample, label)

    def __repr__(self) -> str:
        return (
            f"StoreIterableDataset({self.backend!r}, {str(self.path)!r}, images={self._count}, "
            f"rank={self.rank}, world_size={self.world_size})"
        )


def _buffer_shuffle(samples: Iterator[tuple], size: int, rng: random.Random) -> Iterator[tuple]:
    """Hold up to ``size`` samples; each new one replaces a random held one, which leaves."""
    buffer: list[tuple] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        position = rng.randrange(size)
        buffer[position], sample = sample, buffer[position]
        yield sample
    rng.shuffle(buffer)
    yield from buffer
