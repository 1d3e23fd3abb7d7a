"""Is each peer measured fairly? Its own documentation's way, beside this project's figures, in one run.

    python benchmarks/peers_native.py                      # 100,000 CIFAR images, 3 rounds, loader with 2 workers
    python benchmarks/peers_native.py --count 20000 --rounds 2 --peers litdata,lance

For each peer (LitData, MosaicML Streaming, Lance) a short script written the way that
library's documentation shows, with no code of this project, writes the images, reads them
all, reads 1,000 seeded random ids one at a time and loads shuffled epochs through a
DataLoader with persistent workers. Each script runs in a fresh Python process, reading the
images from a ``.npy`` file loaded before any timer. The same figures come from this
project's engine (``run_experiment``: ``write_batch``, ``read_all``, ``read_random``,
``loader``) on the same images; LitData's in-process writer (``writer="binary-writer"``) is
timed beside its ``optimize``. Rounds alternate the two (native, then the project's run,
then native again...) so that a change in the machine's load falls on both; each figure is
the median over the rounds, and the script prints native ÷ project as rates (above 1: the
project makes the peer look slower than its own documented use; the target is 0.9 to 1.1)
and the load average of each round.

What each native script does:

* LitData: ``litdata.optimize(fn, inputs=list(range(N)), output_dir, chunk_bytes="64MB",
  num_workers=os.cpu_count())`` (``fn`` reads image ``i`` from the memory-mapped ``.npy``,
  as the docs' examples read their files); ``for sample in StreamingDataset(dir)`` for
  everything; ``StreamingDataset(dir, batch_decode=False)[i]`` per random id (batch
  decoding off for random access, as the project reads); loader:
  ``StreamingDataLoader(StreamingDataset(dir, shuffle=True, batch_decode=False), batch_size,
  num_workers, persistent_workers=True)``, against the project's ``litdata (own order)``.
* Streaming: ``MDSWriter(out=dir, columns={"image": "ndarray:uint8", "label": "int64"})``;
  ``for sample in StreamingDataset(local=dir, batch_size=B)``; ``dataset[i]`` per random id;
  loader: torch ``DataLoader(StreamingDataset(local=dir, shuffle=True, batch_size=B), batch_size=B,
  num_workers, persistent_workers=True)``, against ``mds (own order)``.
* Lance: ``lance.write_dataset(table, uri)`` of a fixed-size binary image column and the
  label; ``dataset.to_table()`` for everything; ``dataset.take([i])`` per random id; loader:
  ``get_safe_loader(SafeLanceDataset(uri), batch_size, num_workers, shuffle=True)`` (its
  default persistent workers and spawn; a ``collate_fn`` turns its rows' bytes into a tensor),
  against the project's ``lance`` in the common per-sample shuffle. (Lance's own
  ``LanceDataset`` with DataLoader workers needs each worker sharded by hand, which its
  documentation does not show; the project's ``lance (own order)`` is not compared here.)
* Hugging Face datasets: ``Dataset.from_dict({"image": arrays, "label": ...},
  features=Features({"image": Image(), "label": Value("int64")})).save_to_disk(dir)``;
  ``load_from_disk(dir).with_format("numpy")[:]`` for everything; ``dataset[i]`` per random
  id; loader: torch ``DataLoader(load_from_disk(dir).with_format("torch"), batch_size,
  shuffle=True, num_workers, persistent_workers=True)``, against ``hf-datasets``.
* FFCV: ``DatasetWriter(path, {"image": RGBImageField(write_mode="raw"), "label":
  IntField()}).from_indexed_dataset(dataset)``; a ``Loader(path, order=SEQUENTIAL)`` for
  everything (its default threads, one per core; the pipeline compiles first); no random
  read (FFCV documents none); loader: one ``Loader(path, batch_size, num_workers=max(1, w),
  order=RANDOM, os_cache=True)`` kept for every epoch, with ``SimpleRGBImageDecoder``,
  against ``ffcv``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.bench import Experiment, run_experiment  # noqa: E402
from storage.bench.report import text_table  # noqa: E402
from storage.datasets import load_source, take  # noqa: E402

PEERS = ("litdata", "mds", "lance", "hf-datasets", "ffcv")
REPO_ROOT = Path(__file__).resolve().parents[1]
RANDOM_READS = 1_000

COMMON = """
import json, os, sys, time
import numpy as np

FOLDER, COUNT, BATCH, WORKERS, EPOCHS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
IMAGES = np.load(os.path.join(FOLDER, "images.npy"), mmap_mode="r")
LABELS = np.load(os.path.join(FOLDER, "labels.npy"))
RANDOM_IDS = np.random.default_rng(0).permutation(COUNT)[:1000].tolist()


def timed(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def epochs(loader, count):
    seconds = []
    for _ in range(EPOCHS):
        started, seen = time.perf_counter(), 0
        for batch in loader:
            seen += len(batch["label"]) if isinstance(batch, dict) else len(batch[1])
        seconds.append(time.perf_counter() - started)
        assert seen == count, (seen, count)
    return {"first_epoch": seconds[0], "images_per_second": count / float(np.median(seconds[1:]))}
"""

LITDATA = """
from litdata import StreamingDataLoader, StreamingDataset, optimize


def sample(index):
    return {"image": np.asarray(IMAGES[index]), "label": int(LABELS[index])}


if __name__ == "__main__":
    out = os.path.join(FOLDER, "litdata")
    write = timed(lambda: optimize(fn=sample, inputs=list(range(COUNT)), output_dir=out, chunk_bytes="64MB",
                                   num_workers=os.cpu_count(), verbose=False))
    buffer = np.zeros(IMAGES.shape, np.uint8)

    def read_all():
        for position, item in enumerate(StreamingDataset(out)):
            buffer[position] = item["image"]

    read = timed(read_all)
    dataset = StreamingDataset(out, batch_decode=False)
    dataset[0]
    random = timed(lambda: [dataset[i] for i in RANDOM_IDS])
    loader = StreamingDataLoader(StreamingDataset(out, shuffle=True, batch_decode=False), batch_size=BATCH,
                                 num_workers=WORKERS, persistent_workers=WORKERS > 0)
    print(json.dumps({"write": write, "read_all": read, "read_random": random, "own": epochs(loader, COUNT)}))
"""

MDS = """
from streaming import MDSWriter, StreamingDataset
from torch.utils.data import DataLoader

if __name__ == "__main__":
    out = os.path.join(FOLDER, "mds")
    images = np.ascontiguousarray(IMAGES)

    def write_all():
        with MDSWriter(out=out, columns={"image": "ndarray:uint8", "label": "int64"}) as writer:
            for index in range(COUNT):
                writer.write({"image": images[index], "label": int(LABELS[index])})

    write = timed(write_all)
    buffer = np.zeros(IMAGES.shape, np.uint8)

    def read_all():
        for position, item in enumerate(StreamingDataset(local=out, batch_size=BATCH)):
            buffer[position] = item["image"]

    read = timed(read_all)
    dataset = StreamingDataset(local=out, batch_size=1)
    dataset[0]
    random = timed(lambda: [dataset[i] for i in RANDOM_IDS])
    loader = DataLoader(StreamingDataset(local=out, shuffle=True, batch_size=BATCH), batch_size=BATCH,
                        num_workers=WORKERS, persistent_workers=WORKERS > 0)
    print(json.dumps({"write": write, "read_all": read, "read_random": random, "own": epochs(loader, COUNT)}))
"""

LANCE = """
import lance
import pyarrow as pa
import torch
from lance.torch.data import SafeLanceDataset, get_safe_loader

SHAPE = IMAGES.shape[1:]


def to_tensors(rows):
    images = np.stack([np.frombuffer(row["image"], np.uint8).reshape(SHAPE) for row in rows])
    return torch.from_numpy(images), torch.tensor([row["label"] for row in rows])


if __name__ == "__main__":
    uri = os.path.join(FOLDER, "lance")
    pixels = np.ascontiguousarray(IMAGES).reshape(-1)
    size = int(np.prod(SHAPE))
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(size), COUNT, [None, pa.py_buffer(pixels)])
    table = pa.table({"image": column, "label": pa.array(LABELS, pa.int64())})
    write = timed(lambda: lance.write_dataset(table, uri))
    dataset = lance.dataset(uri)
    buffer = np.zeros(IMAGES.shape, np.uint8)

    def read_all():
        image = dataset.to_table(columns=["image", "label"]).column("image").combine_chunks()
        buffer[...] = np.frombuffer(image.buffers()[1], np.uint8)[: COUNT * size].reshape(buffer.shape)

    read = timed(read_all)
    dataset.take([0])
    random = timed(lambda: [dataset.take([i], columns=["image", "label"]) for i in RANDOM_IDS])
    shuffled = get_safe_loader(SafeLanceDataset(uri), batch_size=BATCH, num_workers=WORKERS, shuffle=True,
                               collate_fn=to_tensors, persistent_workers=WORKERS > 0) if WORKERS else \\
        torch.utils.data.DataLoader(SafeLanceDataset(uri), batch_size=BATCH, shuffle=True, collate_fn=to_tensors)
    print(json.dumps({"write": write, "read_all": read, "read_random": random, "shuffle": epochs(shuffled, COUNT)}))
"""

HF_DATASETS = """
import torch
from datasets import Dataset, Features, Image, Value, load_from_disk
from torch.utils.data import DataLoader

if __name__ == "__main__":
    out = os.path.join(FOLDER, "hf")
    features = Features({"image": Image(), "label": Value("int64")})

    def write_all():
        columns = {"image": [np.asarray(image) for image in IMAGES], "label": LABELS.tolist()}
        Dataset.from_dict(columns, features=features).save_to_disk(out)

    write = timed(write_all)
    buffer = np.zeros(IMAGES.shape, np.uint8)

    def read_all():
        buffer[...] = load_from_disk(out).with_format("numpy")[:]["image"]

    read = timed(read_all)
    dataset = load_from_disk(out).with_format("numpy")
    dataset[0]
    random = timed(lambda: [dataset[i] for i in RANDOM_IDS])
    loader = DataLoader(load_from_disk(out).with_format("torch"), batch_size=BATCH, shuffle=True,
                        num_workers=WORKERS, persistent_workers=WORKERS > 0)
    print(json.dumps({"write": write, "read_all": read, "read_random": random, "shuffle": epochs(loader, COUNT)}))
"""

FFCV = """
from ffcv.fields import IntField, RGBImageField
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import Squeeze, ToTensor
from ffcv.writer import DatasetWriter


class Indexed:
    def __len__(self):
        return COUNT

    def __getitem__(self, index):
        return np.asarray(IMAGES[index]), int(LABELS[index])


def pipelines():
    return {"image": [SimpleRGBImageDecoder(), ToTensor()], "label": [IntDecoder(), ToTensor(), Squeeze(1)]}


if __name__ == "__main__":
    out = os.path.join(FOLDER, "images.beton")
    writer = DatasetWriter(out, {"image": RGBImageField(write_mode="raw"), "label": IntField()})
    write = timed(lambda: writer.from_indexed_dataset(Indexed()))
    buffer = np.zeros(IMAGES.shape, np.uint8)

    def read_all():
        filled = 0
        for images, labels in Loader(out, batch_size=BATCH, order=OrderOption.SEQUENTIAL, pipelines=pipelines()):
            buffer[filled : filled + len(labels)] = images.numpy()
            filled += len(labels)

    read = timed(read_all)
    loader = Loader(out, batch_size=BATCH, num_workers=max(1, WORKERS), order=OrderOption.RANDOM, os_cache=True,
                    drop_last=False, pipelines=pipelines())
    print(json.dumps({"write": write, "read_all": read, "shuffle": epochs(loader, COUNT)}))
"""

SCRIPTS = {"litdata": LITDATA, "mds": MDS, "lance": LANCE, "hf-datasets": HF_DATASETS, "ffcv": FFCV}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="CIFAR images (the sample cycled; default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="native and project runs, alternating (default 3)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma list of: " + ", ".join(PEERS))
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the loader (default 2)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loader: the first apart, then the samples")
    parser.add_argument("--source", default="sample")
    return parser.parse_args()


def native_round(peer: str, folder: Path, args: argparse.Namespace) -> dict:
    """One fresh process running the peer's documentation-style script; its figures."""
    work = Path(tempfile.mkdtemp(dir=folder, prefix=f"{peer}-"))
    for name in ("images.npy", "labels.npy"):
        os.link(folder / name, work / name)
    script = work / "native.py"
    script.write_text(COMMON + textwrap.dedent(SCRIPTS[peer]))
    command = [sys.executable, str(script), str(work), str(args.count), str(args.batch_size), str(args.workers)]
    result = subprocess.run([*command, str(args.epochs)], capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"the native {peer} script failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def project_round(peers: list[str], folder: Path, args: argparse.Namespace) -> dict:
    """The engine's figures for the same images: rates per (peer, figure)."""
    experiment = Experiment(
        backends=peers,
        counts=[args.count],
        operations=["write_batch", "read_all", "read_random", "loader"],
        workers=[args.workers],
        batch_size=args.batch_size,
        repeats=args.epochs - 1,
        source=args.source,
        work_dir=str(folder / "runs"),
        preview_ids=0,
    )
    summary = run_experiment(experiment)
    figures: dict = defaultdict(dict)
    if "litdata" in peers:
        figures["litdata"]["write_batch (in-process BinaryWriter)"] = args.count / _binary_writer_seconds(folder)
    for m in summary.measurements:
        if m.backend not in peers or not m.images_per_second:
            continue
        key = {"loader": f"loader ({m.order})"}.get(m.operation, m.operation)
        figures[m.backend][key] = m.images_per_second
    return figures


def _binary_writer_seconds(folder: Path) -> float:
    """LitData's store written with ``writer="binary-writer"`` (the writer optimize runs in each worker, here
    in-process), timed as the engine times write_batch: open, one write_batch, close."""
    import time

    import storage

    images, labels = np.load(folder / "images.npy"), np.load(folder / "labels.npy")
    path = Path(tempfile.mkdtemp(dir=folder, prefix="litdata-binary-writer-")) / "store"
    started = time.perf_counter()
    with storage.open_store("litdata", path, "w", writer="binary-writer") as store:
        store.write_batch(images, labels)
    return time.perf_counter() - started


def native_rates(figures: dict, count: int) -> dict:
    rates = {"write_batch": count / figures["write"], "read_all": count / figures["read_all"]}
    if "read_random" in figures:  # FFCV documents no read of one sample: its Loader only
        rates["read_random"] = RANDOM_READS / figures["read_random"]
    for order in ("shuffle", "own"):
        if order in figures:
            rates[f"loader ({order})"] = figures[order]["images_per_second"]
    return rates


def main() -> int:
    args = parse_arguments()
    peers = [peer.strip() for peer in args.peers.split(",") if peer.strip()]
    source = load_source(args.source)
    images, labels = take(source.images, source.labels, args.count)
    native: dict = defaultdict(lambda: defaultdict(list))
    project: dict = defaultdict(lambda: defaultdict(list))
    loads: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(dir=REPO_ROOT / "data", prefix="peers-native-") as scratch:
        folder = Path(scratch)
        np.save(folder / "images.npy", images)
        np.save(folder / "labels.npy", labels)
        for round_index in range(args.rounds):
            before = os.getloadavg()[0]
            for peer in peers:
                for name, rate in native_rates(native_round(peer, folder, args), args.count).items():
                    native[peer][name].append(rate)
            for peer, rates in project_round(peers, folder, args).items():
                for name, rate in rates.items():
                    project[peer][name].append(rate)
            loads.append((before, os.getloadavg()[0]))
            print(f"round {round_index + 1}/{args.rounds} done; load average {before:.1f} -> {loads[-1][1]:.1f}")
    print(report(peers, native, project, args))
    in_process = project["litdata"].get("write_batch (in-process BinaryWriter)")
    if in_process and project["litdata"].get("write_batch"):
        optimize, binary = statistics.median(project["litdata"]["write_batch"]), statistics.median(in_process)
        print(
            f"litdata write_batch: optimize {args.count / optimize:.2f} s, in-process BinaryWriter "
            f"(writer='binary-writer') {args.count / binary:.2f} s"
        )
    print("load average at the start and end of each round: " + ", ".join(f"{a:.1f}-{b:.1f}" for a, b in loads))
    return 0


def report(peers: list[str], native: dict, project: dict, args: argparse.Namespace) -> str:
    rows = []
    for peer in peers:
        for name in ("write_batch", "read_all", "read_random", "loader (shuffle)", "loader (own)"):
            if not native[peer].get(name) or not project[peer].get(name):
                continue
            mine, theirs = statistics.median(project[peer][name]), statistics.median(native[peer][name])
            ratio = theirs / mine
            verdict = "ok" if 0.9 <= ratio <= 1.1 else ("project slower" if ratio > 1.1 else "project faster")
            rows.append([peer, name, f"{theirs:,.0f}", f"{mine:,.0f}", f"{ratio:.2f}", verdict])
    title = (
        f"{args.count:,} CIFAR images, loader with {args.workers} workers, batch {args.batch_size}; "
        f"medians of {args.rounds} rounds (images/s; read_random: reads/s)"
    )
    headers = ["peer", "figure", "native", "project", "native ÷ project", "within 0.9-1.1"]
    return title + "\n" + text_table(headers, rows)


if __name__ == "__main__":
    raise SystemExit(main())
