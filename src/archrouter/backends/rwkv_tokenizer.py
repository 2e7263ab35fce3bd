"""The RWKV "world" tokenizer: 65,529 byte strings, greedy longest match over a trie.

Same ids as BlinkDL's TRIE_TOKENIZER (rwkv package, rwkv_tokenizer.py), read from the same
vocabulary file (backends/data/rwkv_vocab_v20230424.txt, Apache-2.0, see backends/data/NOTICE).
Each line is `<id> <python str or bytes literal> <byte length>`; the literal is parsed with
ast.literal_eval, which evaluates literals only. Id 0 is <|endoftext|>, the document separator
RWKV-7 models were trained with; it is not in the file.
"""

from __future__ import annotations

import ast
import codecs
import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

VOCAB_FILE = Path(__file__).parent / "data" / "rwkv_vocab_v20230424.txt"
END_OF_TEXT = 0
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class WorldDecoder:
    """Token ids in, text out as soon as it is complete UTF-8 (a multi-byte character split
    across tokens is held back until its last byte arrives)."""

    def __init__(self, tokenizer: WorldTokenizer):
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Sequence[int]) -> str:
        """Newly complete text after appending `ids`."""
        return self._utf8.decode(b"".join(self._tok.token_bytes(i) for i in ids))

    def flush(self) -> str:
        """Whatever is left (incomplete bytes become U+FFFD)."""
        return self._utf8.decode(b"", final=True)


class WorldTokenizer:
    """Same interface as backends/tokenizer.py's tokenizers (encode, decode, chat template as ids,
    incremental decoder, vocab_size, bos_id, eos_ids)."""

    vocab_size = 65536  # the embedding's rows; ids above 65529 are never produced
    bos_id: int | None = END_OF_TEXT  # RWKV's document separator: a prompt starts a new document
    #: where a chat reply ends (the next turn's header): stop strings for chat requests
    chat_stop = ("\n\nUser:",)

    def __init__(self, vocab_file: str | Path = VOCAB_FILE):
        self.eos_ids: set[int] = {END_OF_TEXT}
        self._id_to_bytes: dict[int, bytes] = {}
        # trie as flat arrays: node -> {byte: child}, node -> token id ending there (-1: none)
        self._children: list[dict[int, int]] = [{}]
        self._token_at: list[int] = [-1]
        for line in Path(vocab_file).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            idx, tok = _parse_line(line)
            self._id_to_bytes[idx] = tok
            self._insert(tok, idx)

    def _insert(self, tok: bytes, idx: int) -> None:
        node = 0
        for byte in tok:
            nxt = self._children[node].get(byte)
            if nxt is None:
                nxt = len(self._children)
                self._children[node][byte] = nxt
                self._children.append({})
                self._token_at.append(-1)
            node = nxt
        self._token_at[node] = idx

    def encode_bytes(self, src: bytes) -> list[int]:
        children, token_at = self._children, self._token_at
        out: list[int] = []
        i, n = 0, len(src)
        while i < n:
            node, j, best, best_end = 0, i, -1, i
            while j < n:
                node = children[node].get(src[j], -1)
                if node < 0:
                    break
                j += 1
                if token_at[node] >= 0:
                    best, best_end = token_at[node], j
            if best < 0:  # every single byte is a token, so this means a broken vocabulary file
                raise ValueError(f"byte {src[i]:#x} has no token")
            out.append(best)
            i = best_end
        return out

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        # lone surrogates (JSON allows "\ud800") have no UTF-8 form: they become U+FFFD
        ids = self.encode_bytes(_LONE_SURROGATE.sub("\ufffd", text).encode("utf-8"))
        return [self.bos_id, *ids] if add_bos else ids

    def token_bytes(self, token_id: int) -> bytes:
        """A token's bytes; special and unused ids render as nothing."""
        return self._id_to_bytes.get(int(token_id), b"")

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def decoder(self) -> WorldDecoder:
        return WorldDecoder(self)

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat prompt's ids (`chat_prompt`), after the document separator."""
        return self.encode(self.chat_prompt(messages), add_bos=True)

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """RWKV world chat format: "User: ...\\n\\nAssistant: ...\\n\\n", ending in "Assistant:".
        A blank line separates turns, so blank lines inside a message are folded to one newline
        (as ChatRWKV does)."""
        names = {"system": "System", "user": "User", "assistant": "Assistant"}
        parts = []
        for m in messages:
            role = names.get(m.get("role"))
            if role is None:
                raise ValueError(f"unknown chat role {m.get('role')!r}; expected one of {', '.join(names)}")
            text = (m.get("content") or "").strip().replace("\r\n", "\n")
            while "\n\n" in text:
                text = text.replace("\n\n", "\n")
            parts.append(f"{role}: {text}\n\n")
        return "".join(parts) + "Assistant:"


def _parse_line(line: str) -> tuple[int, bytes]:
    first, last = line.index(" "), line.rindex(" ")
    idx = int(line[:first])
    tok = ast.literal_eval(line[first:last].strip())
    if isinstance(tok, str):
        tok = tok.encode("utf-8")
    if not isinstance(tok, bytes) or len(tok) != int(line[last:]):
        raise ValueError(f"bad vocabulary line {idx}: {line[first:last]!r}")
    return idx, tok


@functools.cache
def world_tokenizer() -> WorldTokenizer:
    """The shared instance (building the trie takes about a second)."""
    return WorldTokenizer()
