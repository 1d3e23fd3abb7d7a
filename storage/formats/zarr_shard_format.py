"""The bytes of a Zarr v3 sharded uint8 image array, so the ``zarr`` backend can skip zarr-python.

zarr-python sends every inner chunk through an asyncio codec pipeline that costs a few
hundred microseconds per chunk, a hundred times the work of decompressing one CIFAR
image. The format itself is small (Zarr v3 core specification, codec
``sharding_indexed``), and this module holds what is needed to read and write it:

* :class:`ShardLayout`, parsed from an array's ``zarr.json``: one shard file holds
  ``shard_images`` whole images along the first axis, cut into inner chunks of
  ``chunk_images`` images. Anything else (other data types, chunks that split an image,
  other codecs, an index at the start) raises :class:`UnsupportedLayout`, and the caller
  goes back to zarr-python for that array.
* A shard file is the inner chunks' encoded bytes, then the index: one little-endian
  uint64 pair (offset, nbytes) per inner chunk, (2^64-1, 2^64-1) for a chunk never written
  (it reads as the fill value), followed by the crc32c of those pairs (4 bytes, little
  endian): index codecs ``bytes`` (little endian) then ``crc32c``, index location "end".
* :class:`ChunkCodec`: the inner codecs ``bytes`` then none or one of ``zstd``,
  ``blosc``, ``gzip``, done with the same numcodecs functions zarr-python calls, so the
  bytes are interchangeable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs.zstd
import numpy as np
from numcodecs import GZip
from numcodecs.blosc import Blosc

from ..base import write_file_atomically
from ..errors import CorruptDataError

try:  # one-shot zstd decoding that reuses its context: 4 us for a CIFAR image instead of 13
    import zstd as fast_zstd
except ImportError:  # pragma: no cover - numcodecs alone decodes the same frames, only slower
    fast_zstd = None

EMPTY = 2**64 - 1
"""Offset and nbytes of an inner chunk that was never written."""
INDEX_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
BLOSC_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


class UnsupportedLayout(ValueError):
    """An array this module does not read or write itself (zarr-python still can)."""


# -- inner chunk codecs ---------------------------------------------------------------------


class ChunkCodec:
    """Encodes one inner chunk (an array of whole images) to bytes and back: the ``bytes`` codec alone."""

    runs_decode_at_once = True
    """Whether the bytes of consecutive chunks, back to back, decode in one call."""

    def encode(self, chunk: np.ndarray) -> bytes:
        return np.ascontiguousarray(chunk).tobytes()

    def decode_into(self, data: bytes | memoryview, out: np.ndarray) -> None:
        """Decode ``data`` (one chunk, or a run of them if ``runs_decode_at_once``) into ``out``."""
        if len(data) != out.nbytes:
            raise ValueError(f"{len(data)} bytes where {out.nbytes} were expected")
        out.reshape(-1)[:] = np.frombuffer(data, np.uint8)

    def decode(self, data: bytes | memoryview, shape: tuple[int, ...], nbytes: int) -> np.ndarray:
        """One chunk as a new writable array of ``shape`` (``nbytes`` bytes)."""
        out = np.empty(shape, np.uint8)
        self.decode_into(data, out)
        return out


class ZstdChunkCodec(ChunkCodec):
    """zstd frames, one per chunk; a run of frames decodes in one call into its place."""

    def __init__(self, level: int, checksum: bool) -> None:
        self.level, self.checksum = level, checksum

    def encode(self, chunk: np.ndarray) -> bytes:
        return numcodecs.zstd.compress(np.ascontiguousarray(chunk), self.level, self.checksum)

    def decode_into(self, data: bytes | memoryview, out: np.ndarray) -> None:
        numcodecs.zstd.decompress(data, out)

    def decode(self, data: bytes | memoryview, shape: tuple[int, ...], nbytes: int) -> np.ndarray:
        if fast_zstd is not None:
            try:
                pixels = fast_zstd.decompress(data)
            except fast_zstd.Error:  # e.g. a frame without its content size: numcodecs copes
                pixels = None
            if pixels is not None and len(pixels) == nbytes:
                return np.frombuffer(pixels, np.uint8).reshape(shape).copy()
        return super().decode(data, shape, nbytes)


class BloscChunkCodec(ChunkCodec):
    """Blosc, configured as zarr-python's ``BloscCodec`` configures numcodecs."""

    runs_decode_at_once = False

    def __init__(self, cname: str, clevel: int, shuffle: str, blocksize: int, typesize: int) -> None:
        self.codec = Blosc(
            cname=cname, clevel=clevel, shuffle=BLOSC_SHUFFLES[shuffle], blocksize=blocksize, typesize=typesize
        )

    def encode(self, chunk: np.ndarray) -> bytes:
        return self.codec.encode(np.ascontiguousarray(chunk))

    def decode_into(self, data: bytes | memoryview, out: np.ndarray) -> None:
        self.codec.decode(data, out)


class GzipChunkCodec(ChunkCodec):
    """gzip members, one per chunk, through numcodecs' ``GZip`` as zarr-python uses it."""

    def __init__(self, level: int) -> None:
        self.codec = GZip(level)

    def encode(self, chunk: np.ndarray) -> bytes:
        return self.codec.encode(np.ascontiguousarray(chunk))

    def decode_into(self, data: bytes | memoryview, out: np.ndarray) -> None:
        self.codec.decode(data, out)


def chunk_codec_for(codecs: list[Any]) -> ChunkCodec:
    """The codec for an inner ``codecs`` list of ``zarr.json``, or :class:`UnsupportedLayout`."""
    if not codecs or not isinstance(codecs[0], dict) or codecs[0].get("name") != "bytes" or len(codecs) > 2:
        raise UnsupportedLayout(f"inner codecs {codecs!r} are not 'bytes' and at most one compressor")
    if len(codecs) == 1:
        return ChunkCodec()
    name, configuration = codecs[1].get("name"), codecs[1].get("configuration", {})
    try:
        if name == "zstd":
            return ZstdChunkCodec(int(configuration.get("level", 0)), bool(configuration.get("checksum", False)))
        if name == "blosc":
            return BloscChunkCodec(
                configuration["cname"],
                int(configuration["clevel"]),
                configuration["shuffle"],
                int(configuration.get("blocksize", 0)),
                int(configuration.get("typesize", 1)),
            )
        if name == "gzip":
            return GzipChunkCodec(int(configuration.get("level", 5)))
    except (KeyError, TypeError, ValueError) as error:
        raise UnsupportedLayout(f"compressor {codecs[1]!r} has a configuration not understood here ({error})") from None
    raise UnsupportedLayout(f"compressor {name!r} is not zstd, blosc or gzip")


# -- the array's layout ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShardLayout:
    """Where image ``i`` of a sharded image array lives and how its chunk is encoded."""

    length: int
    image_shape: tuple[int, ...]
    shard_images: int
    chunk_images: int
    fill_value: int
    codec: ChunkCodec
    separator: str

    @property
    def chunks_per_shard(self) -> int:
        return self.shard_images // self.chunk_images

    @cached_property
    def chunk_shape(self) -> tuple[int, ...]:
        return (self.chunk_images, *self.image_shape)

    @cached_property
    def chunk_nbytes(self) -> int:
        return math.prod(self.chunk_shape)

    def decode_chunk(self, data: bytes | memoryview) -> np.ndarray:
        """One inner chunk's bytes as a new (chunk_images, *image_shape) array."""
        return self.codec.decode(data, self.chunk_shape, self.chunk_nbytes)

    @property
    def index_nbytes(self) -> int:
        return 16 * self.chunks_per_shard + 4

    def shard_key(self, shard: int) -> str:
        """The shard file's path inside the array folder (chunk key encoding "default")."""
        return self.separator.join(["c", str(shard)] + ["0"] * len(self.image_shape))

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> ShardLayout:
        """Parse an array's ``zarr.json``; :class:`UnsupportedLayout` says what is not handled."""
        try:
            shape = tuple(int(n) for n in metadata["shape"])
            shard_shape = tuple(int(n) for n in metadata["chunk_grid"]["configuration"]["chunk_shape"])
            codecs = metadata["codecs"]
            key_encoding = metadata["chunk_key_encoding"]
        except (KeyError, TypeError, ValueError) as error:
            raise UnsupportedLayout(f"zarr.json lacks a field read here ({error})") from None
        _check_array(metadata, shape, shard_shape, key_encoding)
        if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
            raise UnsupportedLayout(f"codecs {codecs!r} are not one sharding_indexed codec")
        sharding = codecs[0].get("configuration", {})
        chunk_shape = tuple(int(n) for n in sharding.get("chunk_shape", ()))
        if chunk_shape[1:] != shape[1:] or not chunk_shape[:1] or shard_shape[0] % chunk_shape[0]:
            raise UnsupportedLayout(f"inner chunks {chunk_shape} do not hold whole images of a {shard_shape} shard")
        if sharding.get("index_location", "end") != "end" or not _is_default_index(sharding.get("index_codecs")):
            raise UnsupportedLayout("the shard index is not bytes (little endian) + crc32c at the end")
        return cls(
            length=shape[0],
            image_shape=shape[1:],
            shard_images=shard_shape[0],
            chunk_images=chunk_shape[0],
            fill_value=int(metadata.get("fill_value", 0)),
            codec=chunk_codec_for(list(sharding.get("codecs", []))),
            separator=key_encoding.get("configuration", {}).get("separator", "/"),
        )


def _check_array(metadata: dict[str, Any], shape: tuple, shard_shape: tuple, key_encoding: dict) -> None:
    if metadata.get("zarr_format") != 3 or metadata.get("node_type") != "array":
        raise UnsupportedLayout("not a Zarr v3 array")
    if metadata.get("data_type") != "uint8" or metadata.get("storage_transformers"):
        raise UnsupportedLayout(f"data type {metadata.get('data_type')!r} or storage transformers not handled")
    if metadata["chunk_grid"].get("name") != "regular" or len(shape) < 2 or shard_shape[1:] != shape[1:]:
        raise UnsupportedLayout(f"shards {shard_shape} do not hold whole images of an array of shape {shape}")
    if key_encoding.get("name") != "default":
        raise UnsupportedLayout(f"chunk key encoding {key_encoding!r} is not 'default'")
    fill_value = metadata.get("fill_value", 0)
    if isinstance(fill_value, bool) or not isinstance(fill_value, int) or not 0 <= fill_value <= 255:
        raise UnsupportedLayout(f"fill value {fill_value!r} is not a uint8")


def _is_default_index(index_codecs: Any) -> bool:
    if not isinstance(index_codecs, list) or len(index_codecs) != 2:
        return False
    bytes_codec, checksum = index_codecs
    endian = bytes_codec.get("configuration", {}).get("endian", "little")
    return bytes_codec.get("name") == "bytes" and endian == "little" and checksum.get("name") == "crc32c"


def read_layout(metadata_path: Path) -> ShardLayout:
    """The layout of the array whose ``zarr.json`` is at ``metadata_path``."""
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, ValueError) as error:
        raise UnsupportedLayout(f"cannot read {metadata_path} ({error})") from None
    return ShardLayout.from_metadata(metadata)


def set_array_length(metadata_path: Path, length: int) -> None:
    """Change the first dimension of an array's shape in its ``zarr.json``, as ``resize`` writes it."""
    metadata = json.loads(metadata_path.read_text())
    if metadata["shape"][0] != length:
        metadata["shape"][0] = length
        write_file_atomically(metadata_path, json.dumps(metadata, allow_nan=True, indent=2).encode())


# -- the shard index ------------------------------------------------------------------------


def encode_index(entries: np.ndarray) -> bytes:
    """The index bytes of a shard: (offset, nbytes) uint64 pairs, little endian, then their crc32c."""
    body = np.ascontiguousarray(entries, dtype="<u8").tobytes()
    return body + google_crc32c.value(body).to_bytes(4, "little")


def decode_index(data: bytes, chunks_per_shard: int, data_nbytes: int, path: str) -> np.ndarray:
    """The (chunks_per_shard, 2) uint64 (offset, nbytes) pairs, checked against their crc32c.

    Raises :class:`CorruptDataError` naming ``path`` when the checksum does not match or an
    entry points outside the ``data_nbytes`` bytes before the index.
    """
    body, stored = data[:-4], data[-4:]
    if len(body) != 16 * chunks_per_shard or google_crc32c.value(body) != int.from_bytes(stored, "little"):
        raise CorruptDataError(f"the shard index of {path} fails its crc32c checksum; write the store again")
    entries = np.frombuffer(body, "<u8").reshape(chunks_per_shard, 2)
    offsets, nbytes = entries[entries[:, 0] != EMPTY].T
    if np.any((offsets > data_nbytes) | (nbytes > data_nbytes - offsets)):
        raise CorruptDataError(f"the shard index of {path} points past the end of its chunks; write the store again")
    return entries
