"""The RWKV world tokenizer against the `rwkv` package's TRIE_TOKENIZER, on fresh random text."""

import random

import pytest

from archrouter.backends.rwkv_tokenizer import VOCAB_FILE, WorldTokenizer, world_tokenizer

SAMPLES = [
    "Hello, world!",
    "User: What is 2+2?\n\nAssistant: 4",
    "你好，世界。今天天气怎么样？",
    "naïve café — déjà vu; Ελληνικά; русский текст; עברית; العربية",
    "emoji 🤖🚀👩‍👩‍👧 and math ∑∫√ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "def f(x):\n\treturn x ** 2  # tab and    spaces\r\n",
    "\x00\x01 control \x7f bytes",
    "",
]
# code points from several scripts, punctuation, whitespace and astral planes
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x3040, 0x30FF),
          (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1F64F), (0x1D400, 0x1D7FF)]


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


@pytest.fixture(scope="module")
def theirs():
    mod = pytest.importorskip("rwkv.rwkv_tokenizer")
    return mod.TRIE_TOKENIZER(str(VOCAB_FILE))


def random_text(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.15:
            out.append(rng.choice([" ", "  ", "\n", "\n\n", "\t", "the ", "ing ", ", "]))
        else:
            lo, hi = rng.choice(RANGES)
            out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def test_matches_package_ids_and_round_trips(tok, theirs):
    rng = random.Random()  # fresh text every run
    texts = SAMPLES + [random_text(rng, rng.randint(1, 200)) for _ in range(60)]
    for text in texts:
        ids = tok.encode(text)
        assert ids == theirs.encode(text), text
        assert tok.decode(ids) == text
        assert all(1 <= i <= 65529 for i in ids)


def test_incremental_decoder_holds_back_split_characters(tok):
    text = "é🤖中 ok"
    ids = tok.encode(text)
    # byte-level tokens split multi-byte characters; the decoder must never emit a partial one
    byte_ids = [b + 1 for b in "🤖".encode()]  # ids 1..256 are the single bytes 0..255
    dec = tok.decoder()
    pieces = [dec.push([i]) for i in byte_ids]
    assert pieces[:3] == ["", "", ""] and pieces[3] == "🤖"
    dec = tok.decoder()
    assert "".join(dec.push([i]) for i in ids) + dec.flush() == text
    dec = tok.decoder()
    assert dec.push(byte_ids[:1]) == "" and dec.flush() == "\ufffd"  # dangling lead byte
    dec = tok.decoder()
    assert dec.push(byte_ids[:2]) + dec.push(byte_ids[2:]) == "🤖"


def test_special_ids_and_bos(tok):
    assert tok.encode("hi", add_bos=True)[0] == tok.bos_id == 0
    assert tok.decode([0, *tok.encode("hi"), 0]) == "hi"
    assert tok.eos_ids == {0} and tok.vocab_size == 65536
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"  # lone surrogate from JSON


def test_chat_template(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!\n\n\nTwo paragraphs."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    prompt = tok.chat_prompt(messages)
    assert prompt == ("System: Be brief.\n\nUser: Hi!\nTwo paragraphs.\n\nAssistant: Hello.\n\n"
                      "User: Bye\n\nAssistant:")
    ids = tok.apply_chat_template(messages)
    assert ids == [0, *tok.encode(prompt)] and tok.decode(ids) == prompt
    with pytest.raises(ValueError):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_vocabulary_is_parsed_as_literals_only(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("1 __import__('os').getcwd() 3\n", encoding="utf-8")
    with pytest.raises(ValueError):
        WorldTokenizer(bad)
