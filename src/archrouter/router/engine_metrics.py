"""Engine statistics (queue depth, running batch, prefix-cache hits...) read at scrape time.

Each in-process engine exposes `stats()` as plain numbers; this collector turns them into
Prometheus families labelled by backend. Backends without `stats()` (Ray handles) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

GAUGES = {
    "waiting": "Requests waiting for a place in the running batch (the policy's queue_depth)",
    "running": "Sequences in the running batch (prefilling or decoding)",
    "decoding": "Sequences decoding",
    "prefilling": "Sequences prefilling their prompt",
    "kv_tokens_reserved": "KV-cache tokens reserved by running sequences (attention backends)",
    "slots_used": "State slots in use (recurrent backends)",
    "prefix_cache_bytes": "Bytes of recurrent-state snapshots held by the state cache",
    "kv_blocks_used": "Paged KV blocks held by sequences (attention backends)",
    "kv_blocks_total": "Paged KV blocks in the pool (attention backends)",
}
COUNTERS = {
    "rejected": "Requests refused because the waiting queue was full (HTTP 429)",
    "timed_out": "Requests that waited past the queue timeout (HTTP 503)",
    "cancelled": "Requests whose client went away before the end",
    "steps": "Engine steps (one batched decode plus prompt chunks)",
    "prefill_tokens": "Prompt tokens fed through the model",
    "prefix_hits": "Prompts that restored a cached recurrent state or reused cached KV blocks",
    "prefix_misses": "Prompts with no cached prefix",
    "prefix_saved_tokens": "Prompt tokens not prefilled thanks to a cached prefix",
    "prefix_bytes_read": "Bytes of state snapshots restored",
    "prefix_bytes_written": "Bytes of state snapshots stored",
}


class EngineCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, dict[str, float]]]):
        self.read = read  # backend name -> that engine's stats()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.read()
        for stat, doc in GAUGES.items():
            fam = GaugeMetricFamily(f"archrouter_engine_{stat}", doc, labels=["backend"])
            for backend, s in stats.items():
                if stat in s:
                    fam.add_metric([backend], float(s[stat]))
            yield fam
        for stat, doc in COUNTERS.items():
            fam = CounterMetricFamily(f"archrouter_engine_{stat}", doc, labels=["backend"])
            for backend, s in stats.items():
                if stat in s:
                    fam.add_metric([backend], float(s[stat]))
            yield fam
