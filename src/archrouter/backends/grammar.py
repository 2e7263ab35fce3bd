"""Grammar-constrained decoding with llguidance, and each token's bytes (for logprobs).

llguidance fits every tokenizer we serve: it takes a vocabulary as raw bytes per token (our byte-level
tokenizer, the RWKV world tokenizer) or a Hugging Face `tokenizer.json` as is. Each constrained
sequence owns an `LLMatcher`; before a step the engine has every matcher write its allowed-token
bitmask into one host buffer (one host->device copy), the sampler masks the logits with it, and after
the read-back each matcher consumes its sampled token. Grammars arrive compiled (the router turns a
`response_format` into llguidance's grammar text and rejects what does not compile).
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from archrouter.backends.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer

SPECIAL = b"\xff"  # llguidance's marker for a special token's name in a byte vocabulary


def token_table(tokenizer: Tokenizer) -> list[bytes]:
    """Every token id's bytes; a special token is its name behind the 0xFF marker."""
    n = tokenizer.vocab_size
    if isinstance(tokenizer, ByteTokenizer):
        return [bytes([i]) if i < 256 else SPECIAL + ByteTokenizer.SPECIALS.get(i, f"<|{i}|>").encode()
                for i in range(n)]
    if isinstance(tokenizer, HFTokenizer):
        lt = ll_tokenizer(tokenizer)
        out = []
        for i in range(n):
            b = lt.decode_bytes([i]) if i < lt.vocab_size else b""
            out.append(SPECIAL + (b or f"<|{i}|>".encode()) if not b or lt.is_special_token(i) else b)
        return out
    if hasattr(tokenizer, "token_bytes"):  # the RWKV world tokenizer: ids without bytes are specials
        out = []
        for i in range(n):
            try:
                b = tokenizer.token_bytes(i)
            except (KeyError, IndexError):
                b = b""
            out.append(b if b and i not in tokenizer.eos_ids else SPECIAL + f"<|{i}|>".encode())
        return out
    raise TypeError(f"no token table for {type(tokenizer).__name__}")


class _ByteVocab:
    """What llguidance's TokenizerWrapper reads from a tokenizer given as bytes per token."""

    def __init__(self, tokenizer: Tokenizer, table: list[bytes]):
        self._tok = tokenizer
        self.tokens = table
        eos = sorted(tokenizer.eos_ids)
        self.eos_token_id = eos[0] if eos else None
        self.bos_token_id = tokenizer.bos_id
        self.special_token_ids = [i for i, b in enumerate(table) if b.startswith(SPECIAL)]

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tok.encode(text)


_cache: dict[int, Any] = {}
_lock = threading.Lock()


def ll_tokenizer(tokenizer: Tokenizer) -> Any:
    """The llguidance tokenizer for ours (built once per tokenizer object: an HF one takes ~1 s)."""
    import llguidance

    key = id(tokenizer)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
    eos = sorted(tokenizer.eos_ids)
    if isinstance(tokenizer, HFTokenizer):
        lt = llguidance.LLTokenizer(tokenizer._tok.to_str(), n_vocab=tokenizer.vocab_size, eos_token=eos or None)
    else:
        vocab = _ByteVocab(tokenizer, token_table(tokenizer))
        lt = llguidance.LLTokenizer(llguidance.TokenizerWrapper(vocab), n_vocab=tokenizer.vocab_size,
                                    eos_token=eos or None)
    with _lock:
        _cache[key] = (tokenizer, lt)
    return lt


def new_matcher(tokenizer: Tokenizer, grammar: str) -> Any:
    """A matcher for one sequence; raises ValueError naming the problem when the grammar does not compile
    for this tokenizer."""
    import llguidance

    m = llguidance.LLMatcher(ll_tokenizer(tokenizer), grammar, log_level=0)
    if m.is_error():
        raise ValueError(f"grammar does not compile: {m.get_error()}")
    return m


def words(vocab: int) -> int:
    return (vocab + 31) // 32


_executor: Any = None


def _pool() -> Any:
    """llguidance's thread pool: the rows' masks are computed in parallel, off the GIL."""
    global _executor
    if _executor is None:
        import llguidance

        _executor = llguidance.LLExecutor()
    return _executor


def fill_bitmask(matchers: list[Any | None], vocab: int, eos: int, *, pin: bool) -> torch.Tensor:
    """[B, words] int32 on the host: row i the tokens matchers[i] allows (all, for None). A matcher that
    has stopped or failed allows only `eos`, so its sequence ends rather than leaves the grammar."""
    mask = torch.full((len(matchers), words(vocab)), -1, dtype=torch.int32, pin_memory=pin)
    nbytes = mask.shape[1] * 4
    live: list[tuple[Any, int]] = []
    for i, m in enumerate(matchers):
        if m is None:
            continue
        if m.is_error() or m.is_stopped():
            mask[i].zero_()
            mask[i, eos // 32] = torch.tensor(1 << (eos % 32), dtype=torch.int64).to(torch.int32)
        else:
            live.append((m, i))
    if len(live) == 1:
        m, i = live[0]
        m.unsafe_compute_mask_ptr(mask[i].data_ptr(), nbytes)
    elif live:
        _pool().unsafe_compute_mask_ptr(live, mask.data_ptr(), nbytes, mask.shape[0])
    return mask
