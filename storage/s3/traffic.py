"""Requests and bytes between the readers and the server, counted by the server.

Every format's library talks to S3 with its own client (boto3, the AWS CLI, Arrow's C++
SDK, Rust's ``object_store``), several of them in DataLoader worker processes, so no
single client can count them all. The server can: SeaweedFS keeps Prometheus counters per
bucket (``SeaweedFS_s3_request_total{bucket,type,code}``, and the bytes it sent and
received in ``SeaweedFS_s3_bucket_traffic_{sent,received}_bytes_total``), served on its
metrics port (``python -m storage s3-server`` prints the address; ``--metrics-url`` or
``IMAGE_STORAGE_LAB_S3_METRICS`` points a run at it). A :class:`Traffic` is the
difference between two snapshots of one bucket's counters, taken just before and just
after what is measured. Without a metrics address, requests and bytes are not counted
(None), never guessed.
"""

from __future__ import annotations

import os
import re
import urllib.request
from dataclasses import dataclass, field

METRICS_VARIABLE = "IMAGE_STORAGE_LAB_S3_METRICS"
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
REQUESTS = "SeaweedFS_s3_request_total"
SENT = "SeaweedFS_s3_bucket_traffic_sent_bytes_total"
RECEIVED = "SeaweedFS_s3_bucket_traffic_received_bytes_total"


@dataclass(frozen=True)
class Traffic:
    """Requests by type (``GET``, ``PUT``, ``HEAD``, ``LIST``...) and bytes each way, for one bucket."""

    requests_by_type: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    """Requests answered with a status of 400 or more (retried ones count each time)."""
    sent_bytes: int = 0
    """Bytes the server sent: what the readers downloaded."""
    received_bytes: int = 0
    """Bytes the server received: what was uploaded."""

    @property
    def requests(self) -> int:
        return sum(self.requests_by_type.values())

    def __sub__(self, earlier: Traffic) -> Traffic:
        types = set(self.requests_by_type) | set(earlier.requests_by_type)
        by_type = {t: self.requests_by_type.get(t, 0) - earlier.requests_by_type.get(t, 0) for t in sorted(types)}
        return Traffic(
            {t: n for t, n in by_type.items() if n},
            self.errors - earlier.errors,
            self.sent_bytes - earlier.sent_bytes,
            self.received_bytes - earlier.received_bytes,
        )


def metrics_url(given: str | None = None) -> str | None:
    """The metrics address given, else ``IMAGE_STORAGE_LAB_S3_METRICS``, else None (not counted)."""
    return given or os.environ.get(METRICS_VARIABLE) or None


class ServerMetrics:
    """Snapshots of a SeaweedFS server's per-bucket counters from its Prometheus endpoint."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout

    def snapshot(self, bucket: str) -> Traffic:
        """The counters of ``bucket`` now."""
        with urllib.request.urlopen(self.url, timeout=self.timeout) as response:  # noqa: S310 (a local server)
            text = response.read().decode("utf-8", "replace")
        return parse_metrics(text, bucket)


def parse_metrics(text: str, bucket: str) -> Traffic:
    """The counters of ``bucket`` in a Prometheus text exposition."""
    by_type: dict[str, int] = {}
    errors = sent = received = 0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] not in (REQUESTS, SENT, RECEIVED):
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        if labels.get("bucket") != bucket:
            continue
        value = int(float(match["value"]))
        if match["name"] == REQUESTS:
            kind = labels.get("type", "?")
            by_type[kind] = by_type.get(kind, 0) + value
            if labels.get("code", "200")[:1] in "45":
                errors += value
        elif match["name"] == SENT:
            sent += value
        else:
            received += value
    return Traffic(by_type, errors, sent, received)


class TrafficMeter:
    """Counts what happens between :meth:`start` and :meth:`stop`; counts nothing without a metrics address."""

    def __init__(self, url: str | None, bucket: str) -> None:
        self.metrics = ServerMetrics(url) if url else None
        self.bucket = bucket
        self._start: Traffic | None = None

    @property
    def counting(self) -> bool:
        return self.metrics is not None

    def start(self) -> None:
        if self.metrics is not None:
            self._start = self.metrics.snapshot(self.bucket)

    def stop(self) -> Traffic | None:
        if self.metrics is None or self._start is None:
            return None
        return self.metrics.snapshot(self.bucket) - self._start


__all__ = ["METRICS_VARIABLE", "ServerMetrics", "Traffic", "TrafficMeter", "metrics_url", "parse_metrics"]
