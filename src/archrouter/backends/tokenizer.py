"""Tokenizers every backend uses: a byte-level one for our own checkpoints, HF `tokenizer.json` otherwise.

`load_tokenizer(folder)` picks `HFTokenizer` when the folder holds a `tokenizer.json` and the
`ByteTokenizer` when it does not (or when there is no folder). Both give ids, text, a chat
template that ends ready for the assistant's reply, and an incremental decoder for streaming
that never emits half a UTF-8 character.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class IncrementalDecoder(Protocol):
    def push(self, ids: Sequence[int]) -> str:
        """Newly complete text after appending `ids`."""
        ...

    def flush(self) -> str:
        """Whatever is left (incomplete bytes become U+FFFD)."""
        ...


@runtime_checkable
class Tokenizer(Protocol):
    vocab_size: int
    bos_id: int | None
    eos_ids: set[int]  # generation stops on any of these

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]: ...

    def decoder(self) -> IncrementalDecoder: ...


# ----------------------------------------------------------------------------- bytes

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Lone surrogates (JSON allows "\\ud800") have no UTF-8 form: they become U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


class ByteTokenizer:
    """Ids 0..255 are bytes; 256.. are specials. Text never encodes to a special."""

    BOS, EOS, PAD, SYSTEM, USER, ASSISTANT, END = range(256, 263)
    SPECIALS = {
        BOS: "<|bos|>",
        EOS: "<|eos|>",
        PAD: "<|pad|>",
        SYSTEM: "<|system|>",
        USER: "<|user|>",
        ASSISTANT: "<|assistant|>",
        END: "<|end|>",
    }
    ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

    vocab_size = 263
    bos_id: int | None = BOS
    pad_id = PAD

    def __init__(self) -> None:
        self.eos_ids = {self.EOS, self.END}

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        ids = list(clean_text(text).encode("utf-8"))
        return [self.BOS, *ids] if add_bos else ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        out, run = [], bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                run.append(i)
                continue
            # ids past 262 (the model's vocabulary is padded to 264) decode to nothing, as in `tokenizers`
            if not skip_special_tokens and i in self.SPECIALS:
                out.append(run.decode("utf-8", errors="replace"))
                out.append(self.SPECIALS[i])
                run = bytearray()
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        ids = [self.BOS]
        for m in messages:
            role = m.get("role")
            if role not in self.ROLES:
                raise ValueError(f"unknown chat role {role!r}; expected one of {', '.join(self.ROLES)}")
            ids += [self.ROLES[role], *self.encode(m.get("content") or ""), self.END]
        return [*ids, self.ASSISTANT]

    def decoder(self) -> ByteDecoder:
        return ByteDecoder()


class ByteDecoder:
    """Streams bytes through Python's incremental UTF-8 decoder; specials are dropped."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Sequence[int]) -> str:
        return self._utf8.decode(bytes(int(i) for i in ids if 0 <= int(i) < 256))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


# ----------------------------------------------------------------------------- Hugging Face


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _token_text(value: Any) -> str | None:
    """tokenizer_config.json writes special tokens as a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _chat_template_source(folder: Path, tok_config: dict[str, Any]) -> str | None:
    if (folder / "chat_template.jinja").exists():  # transformers >= 4.50 writes it beside the config
        return (folder / "chat_template.jinja").read_text()
    tpl = tok_config.get("chat_template")
    if isinstance(tpl, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in tpl}
        tpl = named.get("default") or next(iter(named.values()), None)
    return tpl


def _compile_chat_template(source: str) -> Any:
    """Chat templates come from checkpoints, so they run in jinja2's immutable sandbox."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        # jinja's own tojson escapes HTML, which chat templates do not expect
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


class HFTokenizer:
    """A `tokenizers` tokenizer.json plus the special tokens and chat template beside it."""

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer as _HFTok

        folder = Path(folder)
        self.folder = folder
        self._tok = _HFTok.from_file(str(folder / "tokenizer.json"))
        # a second copy that splits special-token strings like any text, for user input (no shared
        # mutable flag between threads)
        self._plain = _HFTok.from_str(self._tok.to_str())
        self._plain.encode_special_tokens = True
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        tok_config = _read_json(folder / "tokenizer_config.json")
        specials_map = _read_json(folder / "special_tokens_map.json")
        model_config = _read_json(folder / "config.json")
        gen_config = _read_json(folder / "generation_config.json")

        def token_id(name: str) -> int | None:
            text = _token_text(tok_config.get(name)) or _token_text(specials_map.get(name))
            return self._tok.token_to_id(text) if text else None

        bos = token_id("bos_token")
        if bos is None:
            bos_ids = _as_ids(model_config.get("bos_token_id")) or _as_ids(gen_config.get("bos_token_id"))
            bos = bos_ids[0] if bos_ids else None
        self.bos_id: int | None = bos
        self.bos_token = self._tok.id_to_token(bos) if bos is not None else ""
        eos = token_id("eos_token")
        self.eos_ids: set[int] = {
            *([eos] if eos is not None else []),
            *_as_ids(model_config.get("eos_token_id")),
            *_as_ids(gen_config.get("eos_token_id")),
        }
        self.eos_token = self._tok.id_to_token(eos) if eos is not None else ""
        source = _chat_template_source(folder, tok_config)
        self._template = _compile_chat_template(source) if source else None

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        # user text must not turn into control tokens: split special-token strings like any other text
        return self._encode(text, add_bos=add_bos, parse_specials=False)

    def _encode(self, text: str, *, add_bos: bool, parse_specials: bool) -> list[int]:
        tok = self._tok if parse_specials else self._plain
        ids = tok.encode(clean_text(text), add_special_tokens=False).ids
        if add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        if self._template is None:
            # no template shipped: a plain transcript the model can at least continue
            return "".join(f"{m['role']}: {m.get('content') or ''}\n" for m in messages) + "assistant:"
        return self._template.render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.render_chat(messages)
        # the template writes its own control tokens (and bos, if it wants one): parse them as specials
        ids = self._encode(text, add_bos=False, parse_specials=True)
        if self._template is None and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decoder(self) -> HFDecoder:
        return HFDecoder(self)


class HFDecoder:
    """vLLM's incremental detokenizer: decode a short window, emit only text that is now stable.

    A token may hold part of a UTF-8 character (byte-level or byte-fallback vocabularies), and
    decoding a window alone can drop a leading space that only context reveals; so each step
    decodes ids[prefix:] and ids[prefix:read] and emits the difference, minus any trailing
    U+FFFD (a character still arriving). Unlike vLLM, text before such a tail is emitted at once.

    Byte-level vocabularies decode lossily in a prefix-stable way, so the stream always joins to
    decode(all). Byte-fallback (<0xNN>) vocabularies replace every byte of an invalid run with
    U+FFFD, which can change as bytes arrive: there the stream may differ from decode(all) in
    replacement characters only, and only where the model emitted invalid UTF-8.
    """

    def __init__(self, tok: HFTokenizer):
        self._tok = tok
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # the text of ids before this has been emitted...
        self._extra = 0  # ...and this many characters after it

    def _pending(self) -> tuple[str, int]:
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        return self._tok.decode(self._ids[self._prefix :]), len(prefix_text) + self._extra

    def push(self, ids: Sequence[int]) -> str:
        self._ids.extend(int(i) for i in ids)
        text, start = self._pending()
        stable = text.rstrip("\ufffd")
        out = stable[start:]
        # nothing half-decoded: slide the window, keeping the new tokens as its context. Not when
        # they decode to nothing (skipped specials): a window must open on visible text, or a
        # decoder that strips the text's first space (SentencePiece) would strip a real one.
        if stable == text and self._tok.decode(self._ids[self._read :]):
            self._prefix, self._read, self._extra = self._read, len(self._ids), 0
        else:
            self._extra += len(out)
        return out

    def flush(self) -> str:
        text, start = self._pending()
        self._prefix = self._read = len(self._ids)
        self._extra = 0
        return text[start:]


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    """`HFTokenizer` if `path` (a folder, or a tokenizer.json) has a tokenizer.json, else `ByteTokenizer`."""
    if path is None:
        return ByteTokenizer()
    path = Path(path)
    if path.is_file() and path.name == "tokenizer.json":
        path = path.parent
    if (path / "tokenizer.json").is_file():
        return HFTokenizer(path)
    return ByteTokenizer()
