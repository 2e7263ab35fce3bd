"""Iteration-level scheduling: which sequences run in the next step, and how many tokens each feeds.

Every step, requests may join (admission from a bounded FCFS queue) and leave (finished, cancelled).
A step feeds one token for every decoding sequence and spends what is left of the per-step token
budget on prompt chunks, so a long prompt is prefilled over several steps while the others keep
decoding. Admission respects `max_num_seqs` and the cache's capacity: a KV token budget for
attention (prompt + max_tokens reserved up front; the engine sizes its KV block pool so that what is
reserved always fits, so a running sequence never runs out), one state slot per sequence for
recurrent families, whose state does not grow.

The waiting queue is shared with the event loop (`add`, `abort`) and guarded by a lock; the running
list belongs to the engine's step thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from archrouter.backends.engine.config import EngineConfig
from archrouter.backends.engine.sequence import Sequence, Status
from archrouter.backends.protocol import BackendError, BackendOverloaded

CapacityKind = Literal["tokens", "slots"]


class QueueTimeout(BackendError):
    """A request waited longer than the queue timeout for a place in the batch (HTTP 503)."""


@dataclass
class StepPlan:
    decode: list[Sequence] = field(default_factory=list)
    prefill: list[tuple[Sequence, int]] = field(default_factory=list)  # (sequence, tokens to feed)

    @property
    def num_tokens(self) -> int:
        return len(self.decode) + sum(n for _, n in self.prefill)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    def __init__(self, config: EngineConfig, capacity: CapacityKind, *, context_length: int):
        self.config = config
        self.capacity = capacity
        self.context_length = context_length
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.kv_reserved = 0
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)  # the step thread sleeps on it when idle
        self.counters = {"rejected": 0, "timed_out": 0, "cancelled": 0, "admitted": 0}

    # ------------------------------------------------------------------ event-loop side

    def add(self, seq: Sequence) -> None:
        with self.lock:
            # free seats count as room too: a request for an idle engine passes through the queue
            free_seats = max(0, self.config.max_num_seqs - len(self.running))
            if len(self.waiting) >= self.config.max_waiting + free_seats:
                self.counters["rejected"] += 1
                raise BackendOverloaded(
                    f"{len(self.waiting)} requests already waiting (max_waiting={self.config.max_waiting})"
                )
            self.waiting.append(seq)
            self.work.notify()

    def abort(self, seq: Sequence) -> None:
        """The client went away: the step thread drops the sequence (and its cache) at its next step."""
        with self.lock:
            if seq.status is Status.FINISHED or seq.aborted:
                return
            seq.aborted = True
            self.counters["cancelled"] += 1
            if seq.status is Status.WAITING:
                if seq in self.waiting:  # a fork of n > 1 waits on its parent, not in the queue
                    self.waiting.remove(seq)
                seq.status = Status.FINISHED
            self.work.notify()

    # ------------------------------------------------------------------ step-thread side

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def wait_for_work(self, timeout: float) -> None:
        with self.lock:
            if not self.has_work():
                self.work.wait(timeout)

    def drop_finished(self) -> list[Sequence]:
        """Remove cancelled running sequences, returning them so their caches are freed."""
        gone = [s for s in self.running if s.aborted]
        for s in gone:
            self._release(s)
        return gone

    def expire(self, now: float | None = None) -> list[tuple[Sequence, QueueTimeout]]:
        now = time.monotonic() if now is None else now
        limit = self.config.queue_timeout_s
        out = []
        with self.lock:
            while self.waiting and now - self.waiting[0].arrival > limit:
                seq = self.waiting.popleft()
                seq.status = Status.FINISHED
                self.counters["timed_out"] += 1
                out.append((seq, QueueTimeout(f"request waited {now - seq.arrival:.1f}s in the queue "
                                              f"(queue_timeout_s={limit})")))
        return out

    def admit(self) -> list[Sequence]:
        """Move waiting sequences into the running batch while seats, capacity and step budget allow."""
        budget = self.config.max_num_batched_tokens - self._committed_tokens()
        admitted: list[Sequence] = []
        with self.lock:
            # n > 1: a parent's forks join when its prompt is in; their seats are held from its admission
            seats = len(self.running) + sum(len(s.forks) for s in self.running)
            while self.waiting and budget > 0 and seats < self.config.max_num_seqs:
                seq = self.waiting[0]
                # the forks take KV too (reserved as whole sequences: safe, if generous)
                if self.running and seats + 1 + len(seq.forks) > self.config.max_num_seqs:
                    break
                need = self._kv_need(seq) * (1 + len(seq.forks))
                # an oversized request still runs when it is alone, rather than never
                if self.capacity == "tokens" and self.kv_reserved + need > self.config.kv_token_budget \
                        and self.running:
                    break
                self.waiting.popleft()
                seq.status = Status.PREFILL
                seq.reserved_tokens = need if self.capacity == "tokens" else 0
                self.kv_reserved += seq.reserved_tokens
                self.running.append(seq)
                seats += 1 + len(seq.forks)
                self.counters["admitted"] += 1
                admitted.append(seq)
                budget -= len(seq.prompt)
        return admitted

    def plan(self) -> StepPlan:
        """This step's work: every decoding sequence one token, prompt chunks in admission order."""
        plan = StepPlan(decode=[s for s in self.running if s.status is Status.DECODE])
        budget = self.config.max_num_batched_tokens - len(plan.decode)
        for seq in self.running:
            if budget <= 0:
                break
            if seq.status is not Status.PREFILL:
                continue
            n = min(seq.prefill_left, budget)
            if seq.snapshot_at > seq.num_computed:  # end a chunk where the state cache wants a snapshot
                n = min(n, seq.snapshot_at - seq.num_computed)
            if n > 0:
                plan.prefill.append((seq, n))
                budget -= n
        # chunks of equal length share one forward; many distinct lengths would mean many small forwards,
        # so past a few shapes every chunk is cut to a power of two (a prompt then takes popcount(len) steps)
        if len({n for _, n in plan.prefill}) > self.config.max_prefill_shapes:
            plan.prefill = [(seq, 1 << (n.bit_length() - 1)) for seq, n in plan.prefill]
        return plan

    def attach(self, child: Sequence) -> None:
        """A fork (n > 1) joins the running batch; its share of the parent's KV reservation moves with it."""
        parent = child.parent
        share = min(self._kv_need(child), parent.reserved_tokens) if self.capacity == "tokens" else 0
        parent.reserved_tokens -= share
        child.reserved_tokens = share
        if parent.status is Status.FINISHED:  # the parent's reservation is gone already: reserve anew
            child.reserved_tokens = self._kv_need(child) if self.capacity == "tokens" else 0
            self.kv_reserved += child.reserved_tokens
        self.running.append(child)

    def finish(self, seq: Sequence) -> None:
        if seq in self.running:
            self._release(seq)
        seq.status = Status.FINISHED

    # ------------------------------------------------------------------ internals

    def _kv_need(self, seq: Sequence) -> int:
        return min(len(seq.prompt) + seq.params.max_tokens, self.context_length)

    def _committed_tokens(self) -> int:
        return sum(1 if s.status is Status.DECODE else s.prefill_left for s in self.running)

    def _release(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.kv_reserved -= seq.reserved_tokens
        seq.reserved_tokens = 0
        seq.status = Status.FINISHED

    def stats(self) -> dict[str, int]:
        decoding = sum(1 for s in self.running if s.status is Status.DECODE)
        return {
            "waiting": len(self.waiting),
            "running": len(self.running),
            "decoding": decoding,
            "prefilling": len(self.running) - decoding,
            "kv_tokens_reserved": self.kv_reserved,
            "kv_token_budget": self.config.kv_token_budget if self.capacity == "tokens" else 0,
            "slots_used": len(self.running) if self.capacity == "slots" else 0,
            "slots_total": self.config.max_num_seqs if self.capacity == "slots" else 0,
            **self.counters,
        }
