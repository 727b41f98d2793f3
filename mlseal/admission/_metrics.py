"""The webhook's Prometheus metrics, through ``prometheus-client`` with an app-local registry.

Each `WebhookMetrics` owns its registry (no process-global state: two webhooks in one
process, as in the tests, count separately). `render` is the exposition ``/metrics`` serves.
The names are a contract with dashboards and alerts (docs/admission.md, "Metrics"):

- ``mlseal_admission_decisions_total{result, reason}``: decisions by result (``allowed``,
  ``denied``, ``warned``) and reason code (``none`` when there is none);
- ``mlseal_admission_decision_duration_seconds``: histogram, body received to response ready;
- ``mlseal_admission_cache_total{outcome}``: decision cache lookups that hit;
- ``mlseal_admission_tls_reloads_total{outcome}``: serving certificate reloads (``ok``, ``failed``);
- ``process_*``: the webhook process's CPU, memory and open files.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "LabelledCounter", "WebhookMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: seconds; the API server gives a webhook at most timeoutSeconds (5 s here)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LabelledCounter:
    """A counter addressed by its label values in order, readable back (for tests and
    health checks) from the same registry the exposition renders."""

    def __init__(self, registry: CollectorRegistry, name: str, help_text: str, labels: Sequence[str]) -> None:
        self._counter = Counter(name, help_text, tuple(labels), registry=registry)
        self._registry = registry
        self._sample = name if name.endswith("_total") else name + "_total"
        self._labels = tuple(labels)

    def inc(self, *label_values: str) -> None:
        self._counter.labels(*label_values).inc()

    def value(self, *label_values: str) -> float:
        got = self._registry.get_sample_value(self._sample, dict(zip(self._labels, label_values, strict=True)))
        return got or 0.0


class WebhookMetrics:
    """Everything /metrics shows."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = LabelledCounter(
            self.registry, "mlseal_admission_decisions_total",
            "Admission decisions by result (allowed, denied, warned) and reason code.", ("result", "reason"),
        )
        self.latency = Histogram(
            "mlseal_admission_decision_duration_seconds", "Time from request body received to response ready.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.cache = LabelledCounter(
            self.registry, "mlseal_admission_cache_total", "Decision cache lookups by outcome.", ("outcome",)
        )
        self.tls_reloads = LabelledCounter(
            self.registry, "mlseal_admission_tls_reloads_total", "Serving certificate reloads by outcome.",
            ("outcome",),
        )
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
