"""Task classifier: hashed TF-IDF n-grams + logistic regression, persisted as JSON (no pickle).

Features (one document = the rendered prompt, see `policies.labelled.render_messages`):
  * char block: lowercased character 3..5-grams (spaces, newlines and punctuation included),
  * word block: lowercased word 1..2-grams (words = runs of alphanumerics/underscore),
  * dense block: log length, log line count, digit / symbol / letter ratios (standardised).
Each n-gram block is sublinear-tf x idf, L2-normalised on its own (like a FeatureUnion of two
TfidfVectorizers). Two scikit-learn logistic regressions are trained on it: a multinomial one over the
six TASKS and a binary one for the state-tracking score. Both are calibrated on a validation split held
out of the training data: temperature scaling for the task probabilities, Platt scaling for the score.

Why not TfidfVectorizer at inference: its Python analyzer costs milliseconds per 1k-token prompt. Here
n-grams are keyed by a 64-bit polynomial hash computed with numpy over the code-point array (prefix sums,
so every n-gram and word costs O(1) vector work) and looked up in a two-choice hash table built at load
time from the vocabulary *strings* stored in the JSON. Unknown n-grams are dropped (exact vocabulary,
like scikit-learn's). Long prompts are cut to a head and a tail slice before featurising, so cost is
bounded; the dense length features still see the full length.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from archrouter.policies.labelled import LabelledPrompt, read_labelled, render_messages
from archrouter.policies.types import TASKS

FORMAT = "archrouter.task-classifier"
FORMAT_VERSION = 1

_M64 = (1 << 64) - 1
_Q = 0x9E3779B97F4A7C15  # odd multiplier of the polynomial hash (invertible mod 2**64)
_QINV = pow(_Q, -1, 1 << 64)
_BIGRAM_MUL = 0xD6E8FEB86659FD93
_SALT_CHAR = 0x632BE59BD9B4E019  # salt * n for a char n-gram of length n
_SALT_WORD = 0x85EBCA77C2B2AE63
_SALT_BIGRAM = 0x27D4EB2F165667C5
_SALT_EDGE_WORD = 0x165667B19E3779F9
_SALT_EDGE_BIGRAM = 0xD3A2646C17A7F2B1

DENSE_NAMES = ("log_chars", "log_lines", "digit_ratio", "symbol_ratio", "alpha_ratio")
_SYMBOLS = "{}()[];=<>+-*/%&|!#$@:_\\\"'`^~"

# one class byte per BMP code point (astral ones map to the last entry, 0): bit 0 word character (what
# str.isalnum() says, plus "_"), bit 1 ASCII digit, bit 2 symbol, bit 3 letter; one gather serves all
_WORD, _DIGIT, _SYMBOL, _ALPHA = 1, 2, 4, 8
_CLASS = np.zeros(0x10001, dtype=np.uint8)
for _i in range(0x10000):
    _c = chr(_i)
    _CLASS[_i] = (
        _WORD * (_c.isalnum() or _c == "_")
        + _DIGIT * ("0" <= _c <= "9")
        + _SYMBOL * (_c in _SYMBOLS)
        + _ALPHA * _c.isalpha()
    )
_BITS = np.arange(16)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    x &= _M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _poly_int(s: str) -> int:
    h, p = 0, 1
    for ch in s:
        h = (h + ord(ch) * p) & _M64
        p = (p * _Q) & _M64
    return h


def hash_char_ngram(s: str) -> int:
    return _mix_int(_poly_int(s) + _SALT_CHAR * len(s))


def hash_words(s: str, salts: tuple[int, int]) -> int:
    """Key of a word ("w") or a word bigram ("w1 w2") under a block's (unigram, bigram) salts."""
    a, _, b = s.partition(" ")
    uni = _mix_int(_poly_int(a) + salts[0])
    return _mix_int(uni * _BIGRAM_MUL + _poly_int(b) + salts[1]) if b else uni


BLOCKS = ("char", "word", "edge")
_WORD_SALTS = {"word": (_SALT_WORD, _SALT_BIGRAM), "edge": (_SALT_EDGE_WORD, _SALT_EDGE_BIGRAM)}


def block_key(block: str, s: str) -> int:
    return hash_char_ngram(s) if block == "char" else hash_words(s, _WORD_SALTS[block])


class Featurizer:
    """Text -> hashed n-grams per block + dense features; the same code trains and serves.

    Blocks: "char" (char n-grams of the clipped text), "word" (word 1-2-grams of the clipped text) and
    "edge" (word 1-2-grams of the first and last `edge_chars` characters only: the request usually sits at
    the start or the end of a prompt, and in its own block it is not drowned by a long context).
    """

    def __init__(
        self,
        *,
        head_chars: int = 1536,
        tail_chars: int = 1536,
        edge_chars: int = 128,
        char_ngrams: tuple[int, int] = (3, 5),
    ):
        self.head_chars, self.tail_chars, self.edge_chars = head_chars, tail_chars, edge_chars
        self.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
        n = max(head_chars + tail_chars, 2 * edge_chars) + 2
        p = np.empty(n, dtype=np.uint64)
        pinv = np.empty(n, dtype=np.uint64)
        a, b = 1, 1
        for i in range(n):  # powers of the hash base and its inverse, once per process
            p[i], pinv[i] = a, b
            a, b = (a * _Q) & _M64, (b * _QINV) & _M64
        self._p, self._pinv = p, pinv

    def settings(self) -> dict[str, Any]:
        return {
            "head_chars": self.head_chars,
            "tail_chars": self.tail_chars,
            "edge_chars": self.edge_chars,
            "char_ngrams": list(self.char_ngrams),
        }

    @staticmethod
    def _clip(text: str, head: int, tail: int) -> str:
        if len(text) <= head + tail:
            return text.lower()
        return (text[:head] + "\n" + text[-tail:]).lower()

    @staticmethod
    def dense(text: str, cls: np.ndarray) -> np.ndarray:
        n = max(len(cls), 1)
        hist = np.bincount(cls, minlength=16)
        return np.array(
            [
                math.log1p(len(text)),
                math.log1p(text.count("\n")),
                hist[(_BITS & _DIGIT) > 0].sum() / n,
                hist[(_BITS & _SYMBOL) > 0].sum() / n,
                hist[(_BITS & _ALPHA) > 0].sum() / n,
            ]
        )

    def _prefix(self, low: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cp = np.frombuffer(low.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        g = np.zeros(len(cp) + 1, dtype=np.uint64)
        np.cumsum(cp * self._p[: len(cp)], out=g[1:])
        return cp, g, _CLASS[np.minimum(cp, 0x10000)]

    def _words(
        self, g: np.ndarray, cls: np.ndarray, salts: tuple[int, int], spans: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        w = np.zeros(len(cls) + 2, dtype=np.int8)
        w[1:-1] = cls & _WORD
        d = np.diff(w)
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        raw = (g[ends] - g[starts]) * self._pinv[starts]
        uni = _mix(raw + np.uint64(salts[0]))
        bi = _mix(uni[:-1] * np.uint64(_BIGRAM_MUL) + raw[1:] + np.uint64(salts[1]))
        sp = None
        if spans:  # (a, b, c, d) -> low[a:b] (+ " " + low[c:d] for bigrams)
            none = -np.ones_like(starts)
            sp = np.concatenate(
                [
                    np.stack([starts, ends, none, none]),
                    np.stack([starts[:-1], ends[:-1], starts[1:], ends[1:]]),
                ],
                axis=1,
            )
        return np.concatenate([uni, bi]), sp

    def hashes(self, text: str, *, spans: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
        """Per-block n-gram hashes, dense features, and (training only) the strings' locations per block."""
        low = self._clip(text, self.head_chars, self.tail_chars)
        cp, g, cls = self._prefix(low)
        L = len(cp)
        lo, hi = self.char_ngrams
        chars, char_spans = [], []
        for n in range(lo, hi + 1):
            if n > L:
                continue
            seg = (g[n:] - g[:-n]) * self._pinv[: L - n + 1]
            chars.append(_mix(seg + np.uint64((_SALT_CHAR * n) & _M64)))
            if spans:
                s = np.arange(L - n + 1)
                char_spans.append(np.stack([s, s + n, -np.ones_like(s), -np.ones_like(s)]))
        out = {"char": np.concatenate(chars) if chars else np.empty(0, np.uint64)}
        out["word"], word_spans = self._words(g, cls, _WORD_SALTS["word"], spans)
        if len(text) <= 2 * self.edge_chars and self.head_chars + self.tail_chars >= 2 * self.edge_chars:
            elow, eg, ecls = low, g, cls  # short text: the edge block covers all of it
        else:
            elow = self._clip(text, self.edge_chars, self.edge_chars)
            _, eg, ecls = self._prefix(elow)
        out["edge"], edge_spans = self._words(eg, ecls, _WORD_SALTS["edge"], spans)
        extra = None
        if spans:
            cs = np.concatenate(char_spans, axis=1) if char_spans else np.empty((4, 0), np.int64)
            extra = {"char": (low, cs), "word": (low, word_spans), "edge": (elow, edge_spans)}
        return out, self.dense(text, cls), extra


class _Table:
    """Two-choice hash table from 64-bit keys to columns, lookups vectorised with numpy."""

    def __init__(self, keys: np.ndarray):
        n = len(keys)
        bits = max(10, int(math.ceil(math.log2(max(n, 1) * 4))))
        self.mask = np.uint64((1 << bits) - 1)
        self.keys = np.concatenate([[np.uint64(0)], keys.astype(np.uint64)])  # slot value 0 = empty
        table = np.zeros(1 << bits, dtype=np.int32)
        m = (1 << bits) - 1
        for col in range(n):  # cuckoo insertion; load factor <= 1/4 so it settles fast
            item, key = col + 1, int(keys[col])
            slot = key & m
            for _ in range(500):
                if table[slot] == 0:
                    table[slot] = item
                    break
                table[slot], item = item, int(table[slot])
                k = int(self.keys[item])
                s1, s2 = k & m, (k >> 32) & m
                slot = s2 if slot == s1 else s1
            else:
                raise RuntimeError("hash table insertion failed (duplicate vocabulary keys?)")
        self.table = table

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """Columns of the keys found (unknown keys dropped)."""
        c1 = self.table[(h & self.mask).astype(np.intp)]
        c2 = self.table[((h >> np.uint64(32)) & self.mask).astype(np.intp)]
        # a key sits in at most one of its two slots (both slots name the same item when they coincide)
        c = np.maximum(c1 * (self.keys[c1] == h), c2 * (self.keys[c2] == h))
        return c[c > 0] - 1


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z: np.ndarray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


class TaskClassifier:
    """Predicts probabilities over TASKS and a state-tracking score for one prompt text."""

    def __init__(
        self,
        *,
        featurizer: Featurizer,
        vocab: dict[str, list[str]],  # block -> n-gram strings, in column order (blocks in BLOCKS order)
        idf: np.ndarray,  # (V,)
        dense_mean: np.ndarray,
        dense_scale: np.ndarray,
        classes: list[str],
        coef: np.ndarray,  # (n_classes, V + n_dense)
        intercept: np.ndarray,  # (n_classes,)
        temperature: float,
        state_coef: np.ndarray,  # (V + n_dense,)
        state_intercept: float,
        platt: tuple[float, float],
        info: dict[str, Any] | None = None,
    ):
        if list(classes) != list(TASKS):
            raise ValueError(f"classes must be {list(TASKS)}, got {classes}")
        if set(vocab) != set(BLOCKS):
            raise ValueError(f"vocab blocks must be {BLOCKS}, got {sorted(vocab)}")
        self.featurizer = featurizer
        self.vocab = {b: list(vocab[b]) for b in BLOCKS}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.dense_mean = np.asarray(dense_mean, dtype=np.float64)
        self.dense_scale = np.asarray(dense_scale, dtype=np.float64)
        self.classes = list(classes)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.temperature = float(temperature)
        self.state_coef = np.asarray(state_coef, dtype=np.float64)
        self.state_intercept = float(state_intercept)
        self.platt = (float(platt[0]), float(platt[1]))
        self.info = dict(info or {})
        sizes = [len(self.vocab[b]) for b in BLOCKS]
        self._bounds = np.cumsum([0, *sizes])  # block b owns columns [_bounds[i], _bounds[i+1])
        v = int(self._bounds[-1])
        if (
            self.idf.shape != (v,)
            or self.coef.shape != (len(TASKS), v + len(DENSE_NAMES))
            or self.state_coef.shape != (v + len(DENSE_NAMES),)
        ):
            raise ValueError("inconsistent classifier arrays")
        # one table per block, built from the stored strings (keys are recomputed, never stored)
        self._tables = {
            b: _Table(np.array([block_key(b, s) for s in self.vocab[b]], dtype=np.uint64)) for b in BLOCKS
        }
        # one weight matrix: 6 task logits + the state logit, so one gather serves both models
        self._w_sparse = np.concatenate([self.coef[:, :v], self.state_coef[None, :v]]).T.copy()
        self._w_dense = np.concatenate([self.coef[:, v:], self.state_coef[None, v:]]).T.copy()
        self._b = np.concatenate([self.intercept, [self.state_intercept]])

    # -- features ---------------------------------------------------------------------------------

    def _row(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sparse tf-idf row (cols, values; each block L2-normalised) and standardised dense features."""
        hashes, dense, _ = self.featurizer.hashes(text)
        cols_all, vals_all = [], []
        for i, b in enumerate(BLOCKS):
            cols, counts = np.unique(self._tables[b].lookup(hashes[b]), return_counts=True)
            cols = cols + self._bounds[i]
            vals = (1.0 + np.log(counts)) * self.idf[cols]
            norm = math.sqrt(float(np.dot(vals, vals)))
            cols_all.append(cols)
            vals_all.append(vals / norm if norm > 0 else vals)
        return (
            np.concatenate(cols_all),
            np.concatenate(vals_all),
            (dense - self.dense_mean) / self.dense_scale,
        )

    def _logits(self, text: str) -> np.ndarray:
        cols, vals, dense = self._row(text)
        return vals @ self._w_sparse[cols] + dense @ self._w_dense + self._b

    # -- public -----------------------------------------------------------------------------------

    def predict(self, text: str) -> tuple[dict[str, float], float]:
        z = self._logits(text)
        p = _softmax(z[:-1] / self.temperature)
        score = float(_sigmoid(self.platt[0] * z[-1] + self.platt[1]))
        return {t: float(x) for t, x in zip(self.classes, p, strict=True)}, score

    def predict_many(self, texts: Sequence[str]) -> list[tuple[dict[str, float], float]]:
        return [self.predict(t) for t in texts]

    def predict_messages(self, messages: Sequence[Any]) -> tuple[dict[str, float], float]:
        return self.predict(render_messages(messages))

    def raw_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated (n, 7) logits: six task logits and the state logit (used for calibration)."""
        return np.stack([self._logits(t) for t in texts]) if texts else np.empty((0, len(TASKS) + 1))

    # -- persistence ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "featurizer": {
                **self.featurizer.settings(),
                "word_ngrams": [1, 2],
                "sublinear_tf": True,
                "norm": "l2 per block",
                "blocks": list(BLOCKS),
                "hash": "splitmix64(poly(q) + salt); keys recomputed from vocab strings at load",
            },
            "vocab": self.vocab,
            "idf": self.idf.tolist(),
            "dense": {
                "names": list(DENSE_NAMES),
                "mean": self.dense_mean.tolist(),
                "scale": self.dense_scale.tolist(),
            },
            "task_model": {
                "classes": self.classes,
                "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist(),
                "temperature": self.temperature,
            },
            "state_model": {
                "coef": self.state_coef.tolist(),
                "intercept": self.state_intercept,
                "platt": list(self.platt),
            },
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskClassifier:
        if d.get("format") != FORMAT or d.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} document")
        f = d["featurizer"]
        tm, sm = d["task_model"], d["state_model"]
        return cls(
            featurizer=Featurizer(
                head_chars=f["head_chars"],
                tail_chars=f["tail_chars"],
                edge_chars=f["edge_chars"],
                char_ngrams=tuple(f["char_ngrams"]),
            ),
            vocab=d["vocab"],
            idf=np.array(d["idf"]),
            dense_mean=np.array(d["dense"]["mean"]),
            dense_scale=np.array(d["dense"]["scale"]),
            classes=tm["classes"],
            coef=np.array(tm["coef"]),
            intercept=np.array(tm["intercept"]),
            temperature=tm["temperature"],
            state_coef=np.array(sm["coef"]),
            state_intercept=sm["intercept"],
            platt=tuple(sm["platt"]),
            info=d.get("info", {}),
        )

    def save(self, path: str | Path) -> None:
        """JSON (gzip-compressed when the name ends in .gz)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if path.suffix == ".gz":
            data = gzip.compress(data, compresslevel=9, mtime=0)  # mtime=0: same bytes for the same model
        path.write_bytes(data)

    @classmethod
    def load(cls, path: str | Path) -> TaskClassifier:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return cls.from_dict(json.loads(raw))


# -- training ---------------------------------------------------------------------------------------


def _sig(a: Any, digits: int = 6) -> np.ndarray:
    """Round to `digits` significant digits, so the saved JSON is short and reloads bit-exactly."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([float(f"{x:.{digits}g}") for x in a.ravel()]).reshape(a.shape)


def _record_fields(r: Any) -> tuple[str, str, bool]:
    """(text, task, tracks_state) from a LabelledPrompt, a dict in the JSONL format, or a similar object."""
    if isinstance(r, dict):
        r = LabelledPrompt.model_validate(r)
    if isinstance(r, LabelledPrompt):
        return r.text(), r.task, r.tracks_state()
    prompt = getattr(r, "prompt", None)
    text = prompt if prompt is not None else render_messages(r.messages)
    st = getattr(r, "state_tracking", None)
    return text, r.task, (r.task == "state_tracking") if st is None else bool(st)


def _vocab(
    per_doc: list[np.ndarray], spans: list[tuple[str, np.ndarray]], *, min_df: int, max_features: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Keys, strings and document frequencies of the `max_features` most frequent n-grams, df >= min_df."""
    uniq = [np.unique(h, return_index=True) for h in per_doc]
    allk = np.concatenate([u[0] for u in uniq])
    doc_of = np.concatenate([np.full(len(u[0]), i) for i, u in enumerate(uniq)])
    pos_of = np.concatenate([u[1] for u in uniq])
    keys, first, df = np.unique(allk, return_index=True, return_counts=True)
    keep = np.flatnonzero(df >= min_df)
    keep = np.sort(keep[np.argsort(-df[keep], kind="stable")[:max_features]])
    strings = []
    for k in keep:  # recover each kept n-gram's text from its first occurrence
        doc, pos = doc_of[first[k]], pos_of[first[k]]
        low, sp = spans[doc]
        a, b, c, d = sp[:, pos].tolist()
        strings.append(low[a:b] + (" " + low[c:d] if c >= 0 else ""))
    return keys[keep], strings, df[keep]


MAX_FEATURES = {"char": 60_000, "word": 30_000, "edge": 15_000}
# the shipped model's settings, chosen by 3-fold cross-validation over the hand-written *training*
# prompts (the held-out ones were not consulted); `train`'s own defaults stay the plain ones
SHIPPED_C_TASK = 30.0
SHIPPED_TAG_WEIGHTS = {"handwritten": 20.0}


def train(
    records: Sequence[Any],
    *,
    seed: int = 0,
    min_df: int = 2,
    max_features: dict[str, int] | None = None,
    c_task: float = 10.0,
    c_state: float = 10.0,
    val_fraction: float = 0.15,
    featurizer: dict[str, Any] | None = None,
    tag_weights: dict[str, float] | None = None,
) -> TaskClassifier:
    """Fit vocabulary, idf, both logistic regressions and their calibration on `records`
    (LabelledPrompt objects, dicts in the JSONL format, or objects with prompt/messages, task).

    `tag_weights` multiplies the loss weight of records carrying a tag (the largest applies): a few
    hundred hand-written prompts would otherwise be drowned by thousands of template-made ones."""
    from scipy import optimize, sparse
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    max_features = {**MAX_FEATURES, **(max_features or {})}
    fields = [_record_fields(r) for r in records]
    texts = [f[0] for f in fields]
    y = np.array([TASKS.index(f[1]) for f in fields])
    ys = np.array([f[2] for f in fields], dtype=int)
    tw = tag_weights or {}
    sw = np.array([max([tw.get(t, 1.0) for t in _record_tags(r)] or [1.0]) for r in records])
    missing = [t for i, t in enumerate(TASKS) if not (y == i).any()]
    if missing:
        raise ValueError(f"training data has no examples of {missing}")

    rng = np.random.default_rng(seed)
    # stratified validation split for calibration (none for classes with a single example)
    val = np.zeros(len(y), dtype=bool)
    for i in range(len(TASKS)):
        idx = np.flatnonzero(y == i)
        if len(idx) >= 2:
            val[rng.permutation(idx)[: max(int(round(len(idx) * val_fraction)), 1)]] = True
    fit = ~val
    fit_idx = np.flatnonzero(fit)

    feat = Featurizer(**(featurizer or {}))
    per = [feat.hashes(t, spans=True) for t in texts]
    vocab, dfs = {}, []
    for b in BLOCKS:
        keys, strings, df = _vocab(
            [per[i][0][b] for i in fit_idx],
            [per[i][2][b] for i in fit_idx],
            min_df=min_df,
            max_features=max_features[b],
        )
        # the strings written to JSON must hash back to the keys found while featurising
        if [block_key(b, s) for s in strings] != keys.tolist():
            raise AssertionError(f"{b} n-gram keys do not round-trip through their strings")
        vocab[b] = strings
        dfs.append(df)
    v = sum(len(vocab[b]) for b in BLOCKS)
    nd = len(DENSE_NAMES)
    n_fit = len(fit_idx)
    idf = _sig(np.log((1 + n_fit) / (1 + np.concatenate(dfs))) + 1.0)  # scikit-learn's smooth idf
    dense_all = np.stack([p[1] for p in per])
    mean = _sig(dense_all[fit].mean(axis=0))
    scale = _sig(np.maximum(dense_all[fit].std(axis=0), 1e-6))

    def build(coef: np.ndarray, intercept: np.ndarray, s_coef: np.ndarray, s_int: float) -> TaskClassifier:
        return TaskClassifier(
            featurizer=feat,
            vocab=vocab,
            idf=idf,
            dense_mean=mean,
            dense_scale=scale,
            classes=list(TASKS),
            coef=coef,
            intercept=intercept,
            temperature=1.0,
            state_coef=s_coef,
            state_intercept=s_int,
            platt=(1.0, 0.0),
        )

    # a zero-weight classifier gives the exact serving-time feature rows
    shell = build(np.zeros((len(TASKS), v + nd)), np.zeros(len(TASKS)), np.zeros(v + nd), 0.0)
    rows, cols, vals, dense = [], [], [], []
    for i, t in enumerate(texts):
        c, x, dn = shell._row(t)
        rows.append(np.full(len(c), i))
        cols.append(c)
        vals.append(x)
        dense.append(dn)
    xs = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(texts), v)
    )
    X = sparse.hstack([xs, sparse.csr_matrix(np.stack(dense))]).tocsr()

    task_lr = LogisticRegression(C=c_task, max_iter=3000, random_state=seed)
    task_lr.fit(X[fit], y[fit], sample_weight=sw[fit])
    if len(set(ys[fit].tolist())) == 2:
        state_lr = LogisticRegression(C=c_state, max_iter=3000, random_state=seed, class_weight="balanced")
        state_lr.fit(X[fit], ys[fit], sample_weight=sw[fit])
        s_coef, s_int = _sig(state_lr.coef_[0]), float(_sig(state_lr.intercept_)[0])
    else:  # degenerate tiny sets: a constant score
        s_coef, s_int = np.zeros(v + nd), (4.0 if ys[fit].all() else -4.0)
    clf = build(_sig(task_lr.coef_), _sig(task_lr.intercept_), s_coef, s_int)

    # calibration on the validation split: temperature for the tasks, Platt for the state score
    temperature, platt = 1.0, (1.0, 0.0)
    if val.any():
        z = clf.raw_logits([texts[i] for i in np.flatnonzero(val)])
        zt, yv, zs, sv = z[:, :-1], y[val], z[:, -1], ys[val]

        def nll(log_t: float) -> float:
            p = _softmax(zt / math.exp(log_t))
            return float(-np.mean(np.log(np.clip(p[np.arange(len(yv)), yv], 1e-12, None))))

        res = optimize.minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
        temperature = float(_sig(math.exp(res.x)))
        if len(set(sv.tolist())) == 2:
            pl = LogisticRegression(C=1e4, max_iter=1000).fit(zs[:, None], sv)
            platt = (float(_sig(pl.coef_[0, 0])), float(_sig(pl.intercept_[0])))
    clf.temperature, clf.platt = temperature, platt
    clf.info = {
        "seed": seed,
        "n_train": len(texts),
        "n_fit": int(fit.sum()),
        "n_calibration": int(val.sum()),
        "features": {b: len(vocab[b]) for b in BLOCKS},
        "min_df": min_df,
        "c_task": c_task,
        "c_state": c_state,
        "tag_weights": dict(sorted(tw.items())),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return clf


# -- evaluation and the CLI entry point --------------------------------------------------------------


def _record_tags(r: Any) -> list[str]:
    return list(getattr(r, "tags", None) or (r.get("tags", []) if isinstance(r, dict) else []))


def evaluate(clf: TaskClassifier, records: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-task precision/recall, state AUC; also split by each record tag present."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, roc_auc_score

    fields = [_record_fields(r) for r in records]
    tags = [_record_tags(r) for r in records]
    preds = clf.predict_many([f[0] for f in fields])
    y = np.array([TASKS.index(f[1]) for f in fields])
    yp = np.array([int(np.argmax([p[0][t] for t in TASKS])) for p in preds])
    ys = np.array([f[2] for f in fields], dtype=int)
    ss = np.array([p[1] for p in preds])

    def block(mask: np.ndarray) -> dict[str, Any]:
        labels = list(range(len(TASKS)))
        pr, rc, f1, sup = precision_recall_fscore_support(y[mask], yp[mask], labels=labels, zero_division=0)
        present = [i for i in labels if sup[i] > 0]
        out: dict[str, Any] = {
            "n": int(mask.sum()),
            "accuracy": round(float(accuracy_score(y[mask], yp[mask])), 4),
            "macro_f1": round(
                float(f1_score(y[mask], yp[mask], labels=present, average="macro", zero_division=0)), 4
            ),
            "per_task": {
                TASKS[i]: {
                    "precision": round(float(pr[i]), 4),
                    "recall": round(float(rc[i]), 4),
                    "f1": round(float(f1[i]), 4),
                    "support": int(sup[i]),
                }
                for i in labels
            },
        }
        if len(set(ys[mask].tolist())) == 2:
            out["state_tracking_auc"] = round(float(roc_auc_score(ys[mask], ss[mask])), 4)
        return out

    result = block(np.ones(len(y), dtype=bool))
    result["confusion"] = {
        TASKS[i]: {TASKS[j]: int(((y == i) & (yp == j)).sum()) for j in range(len(TASKS))}
        for i in range(len(TASKS))
    }
    all_tags = sorted({t for ts in tags for t in ts})
    result["by_tag"] = {t: block(np.array([t in ts for ts in tags])) for t in all_tags}
    return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_file(
    data: Path | Sequence[Path],
    out: Path,
    *,
    test: Path | None = None,
    seed: int = 0,
    command: str | None = None,
    c_task: float = SHIPPED_C_TASK,
    tag_weights: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Train on labelled JSONL `data` (one file or several, concatenated), save the model to `out` (a
    file, or a directory that gets task-classifier.json.gz), evaluate on `test` when given; write
    metrics.json beside the model and return the metrics."""
    files = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    out = Path(out)
    model_path = out if out.suffix in (".json", ".gz") else out / "task-classifier.json.gz"
    per_file = [(f, read_labelled(f)) for f in files]
    records = [r for _, rs in per_file for r in rs]
    weights = SHIPPED_TAG_WEIGHTS if tag_weights is None else tag_weights
    clf = train(records, seed=seed, c_task=c_task, tag_weights=weights)
    clf.save(model_path)
    metrics: dict[str, Any] = {
        "model": str(model_path),
        "seed": seed,
        "command": command,
        "train": {
            "n": len(records),
            "files": [{"file": str(f), "sha256": _sha256(f), "n": len(rs)} for f, rs in per_file],
        },
        "model_info": clf.info,
        "model_bytes": model_path.stat().st_size,
    }
    if test is not None:
        test = Path(test)
        test_records = read_labelled(test)
        metrics["test"] = {"file": str(test), "sha256": _sha256(test), **evaluate(clf, test_records)}
    (model_path.parent / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    """python -m archrouter.policies.classifier --data TRAIN.jsonl [MORE ...] [--test TEST.jsonl] --out OUT [--seed N]
    """
    import argparse
    import shlex
    import sys

    ap = argparse.ArgumentParser(description="Train the task classifier from labelled JSONL.")
    ap.add_argument("--data", type=Path, required=True, nargs="+")
    ap.add_argument("--test", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--c-task", type=float, default=SHIPPED_C_TASK, help="inverse L2 strength, task model")
    ap.add_argument(
        "--tag-weight", action="append", default=[], metavar="TAG=W", help="loss weight of records with TAG"
    )
    args = ap.parse_args(argv)
    weights = {k: float(v) for k, v in (a.split("=", 1) for a in args.tag_weight)} or None
    cmd = "python -m archrouter.policies.classifier " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    m = train_file(
        args.data, args.out, test=args.test, seed=args.seed, command=cmd, c_task=args.c_task, tag_weights=weights
    )
    brief = (
        {k: m["test"][k] for k in ("n", "accuracy", "macro_f1", "state_tracking_auc")} if "test" in m else {}
    )
    print(
        json.dumps(
            {
                "model": m["model"],
                "bytes": m["model_bytes"],
                "test": brief,
                "by_tag": {t: b["macro_f1"] for t, b in m.get("test", {}).get("by_tag", {}).items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
