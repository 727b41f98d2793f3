"""A few Prometheus metrics in the text exposition format (version 0.0.4), thread-safe.

Small on purpose: counters with labels and one histogram are all the webhook exports,
and writing them here keeps the server free of a global metrics registry.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: seconds; the API server gives a webhook at most timeoutSeconds (5 s here)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


class Counter:
    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + by

    def value(self, *label_values: str) -> float:
        with self._lock:
            return self._values.get(label_values, 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        out += [f"{self.name}{_labels(self.labels, k)} {v:g}" for k, v in items]
        return out


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.name, self.help = name, help_text
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def render(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, c in zip(self.buckets, counts, strict=False):
            running += c
            out.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        running += counts[-1]
        out.append(f'{self.name}_bucket{{le="+Inf"}} {running}')
        out.append(f"{self.name}_sum {total:.6f}")
        out.append(f"{self.name}_count {running}")
        return out


class WebhookMetrics:
    """Everything /metrics shows."""

    def __init__(self) -> None:
        self.decisions = Counter(
            "mlseal_admission_decisions_total",
            "Admission decisions by result (allowed, denied, warned) and reason code.",
            ("result", "reason"),
        )
        self.latency = Histogram(
            "mlseal_admission_decision_duration_seconds",
            "Time from request body received to response ready.",
        )
        self.cache = Counter("mlseal_admission_cache_total", "Decision cache lookups by outcome.", ("outcome",))
        self.tls_reloads = Counter(
            "mlseal_admission_tls_reloads_total", "Serving certificate reloads by outcome.", ("outcome",)
        )

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.decisions, self.latency, self.cache, self.tls_reloads):
            lines += m.render()
        return "\n".join(lines) + "\n"
