"""The loader's Prometheus metrics, written to a file (prometheus-client's textfile format).

The loader is a one-shot init container: it exits before any scrape could reach it,
so it exposes no port. With ``--metrics-file FILE`` (or ``MLSEAL_METRICS_FILE``) it
writes its metrics with `prometheus_client.write_to_textfile` (a temp file renamed over
FILE, so a reader never sees half a file) for node_exporter's textfile collector or a
sidecar to pick up from a shared volume; a Pushgateway would add a service to the path
of every model start, and its failure mode (a pod that cannot push) is not the
verification's. The names are a contract with dashboards (docs/fetch.md):

- ``mlseal_fetch_verifications_total{result, reason}``: this run's verification, by
  result (``published``, ``refused``, ``error``) and admission reason code (``none``
  when there is none);
- ``mlseal_fetch_verified_bytes_total``: bytes verified and published;
- ``mlseal_fetch_duration_seconds``: the run's wall time, start to verdict;
- ``mlseal_fetch_last_run_timestamp_seconds``: when the run ended (Unix time).
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

from mlseal.errors import ConfigurationError

__all__ = ["METRICS_ENV", "LoaderMetrics"]

METRICS_ENV = "MLSEAL_METRICS_FILE"


class LoaderMetrics:
    """One run's metrics, in an app-local registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.verifications = Counter(
            "mlseal_fetch_verifications_total", "Model verifications by result (published, refused, error) "
            "and admission reason code.", ("result", "reason"), registry=self.registry)
        self.verified_bytes = Counter(
            "mlseal_fetch_verified_bytes_total", "Bytes verified and published.", registry=self.registry)
        self.duration = Gauge(
            "mlseal_fetch_duration_seconds", "Wall time of the loader run, start to verdict.", registry=self.registry)
        self.last_run = Gauge(
            "mlseal_fetch_last_run_timestamp_seconds", "When the loader run ended (Unix time).",
            registry=self.registry)

    def observe(self, result: str, reasons: tuple[str, ...], nbytes: int, seconds: float) -> None:
        for reason in reasons or ("none",):
            self.verifications.labels(result, reason).inc()
        self.verified_bytes.inc(nbytes)
        self.duration.set(seconds)
        self.last_run.set(time.time())

    def write(self, path: str) -> None:
        """Write the metrics to `path` atomically; a path that cannot be written is a
        configuration error (the operator named it)."""
        try:
            write_to_textfile(path, self.registry)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the metrics file {path} (--metrics-file / ${METRICS_ENV}): "
                f"{exc.strerror or exc}; name a file in a writable volume, e.g. /var/lib/mlseal/metrics/fetch.prom"
            ) from None


def metrics_path(flag: str | None) -> str | None:
    return flag or os.environ.get(METRICS_ENV) or None
