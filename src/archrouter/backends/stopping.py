"""Stop strings that may straddle token boundaries."""

from __future__ import annotations


class StopMatcher:
    """Feeds decoded text through; holds back any tail that could still become a stop string.

    `push(text)` returns (text safe to emit, stopped). Once stopped, the stop string and
    everything after it are dropped, as OpenAI does.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        buf = self._held + text
        if not self.stops:
            return buf, False
        # the stop that completes first wins (as if text arrived one character at a time), so the
        # result does not depend on how the text was split into tokens
        hits = [(i + len(s), i) for s in self.stops if (i := buf.find(s)) >= 0]
        if hits:
            cut = min(hits)[1]
            self._held = ""
            return buf[:cut], True
        keep = 0  # longest suffix of buf that is a proper prefix of some stop
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:n]):
                    keep = n
                    break
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self._held = self._held, ""
        return out
