"""Goldens for common/tokenizer.c: a small byte-level BPE trained with HF `tokenizers` and set up
like microsoft/phi-2's tokenizer.json (ByteLevel pre-tokenizer/decoder/post-processor, no
normalizer, `<|endoftext|>` as the last model id and a special added token, and the non-special
added tokens for runs of 31..2 spaces and 9..2 tabs), plus HF's encodings and decodings.

Files written to tests/data/tokenizer/:
  tokenizer.json            the tokenizer (compact JSON, merges in the new [a, b] form)
  vocab.json, merges.txt, added_tokens.json   the same tokenizer for the second loader
  legacy.json               a tiny tokenizer with merges in the old "a b" string form
  cases.bin                 encode goldens for tokenizer.json   (format below)
  cases_files.bin           encode goldens checked with the vocab.json/merges.txt loader
  cases_legacy.bin          encode goldens for legacy.json
  decode.bin                decode goldens for odd id sequences (invalid UTF-8 and so on)

cases*.bin: "TVTK" u32 count, then per case: u32 text_len, text bytes (UTF-8), u32 n_ids,
n_ids x u16 ids, u32 dec_len, dec bytes, where dec_len 0xFFFFFFFF means "the decode equals the
text". decode.bin: "TVTD" u32 count, per case: u32 n_ids, n_ids x u16, u32 dec_len, dec bytes,
u32 dec_skip_len, bytes (decode with skip_special_tokens=True). All little-endian.
HF decode here is tokenizers.Tokenizer.decode (no transformers clean-up of spaces)."""
import json
import pathlib
import random
import struct
import sys
import sysconfig
import unicodedata

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import AddedToken

MODEL_VOCAB = 8192  # BPE ids 0..8191; <|endoftext|> gets 8192, like 50256 in Phi-2
EOT = "<|endoftext|>"
SPACE_RUNS = [" " * n for n in range(31, 1, -1)]
TAB_RUNS = ["\t" * n for n in range(9, 1, -1)]

WORDS = ("the of and to in is was that for it with as his on be at by had are but from or have "
         "an they which one you were all we her she there would their will when who him been has "
         "more if no out so said what up its about than into them can only other time new some "
         "could these two may first then do any like my now over such our man me even most made "
         "after also did many off before must well back through years where much your way down "
         "should because each just those people how too little state good very make world still "
         "own see men work long get here between both life being under never day same another "
         "know while last might us great old year since against go came right used take three "
         "tokenizer tensor embedding gateway worker vision language model decode stream").split()
ACCENTED = "café naïve résumé über straße façade jalapeño São Paulo Zürich Ångström crème brûlée".split()
SCRIPTS = [
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "Καλημέρα κόσμε, τι κάνεις; Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "你好，世界！我能吞下玻璃而不伤身体。今天天气很好。",
    "日本語のテキスト、ひらがなとカタカナと漢字。東京は晴れです。",
    "한국어 텍스트입니다. 안녕하세요 세계!",
    "مرحبا بالعالم، هذا نص عربي ١٢٣٤٥.",
    "שלום עולם, זה טקסט בעברית.",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
    "नमस्ते दुनिया, यह हिंदी पाठ है। ०१२३",
    "Ça va? Où est la bibliothèque? Él está aquí. Ñandú.",
    "Tiếng Việt có nhiều dấu: người, được, những.",
    "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.",
]
EMOJI = ["😀", "👍", "👍🏽", "❤️", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "🧑🏿‍💻", "👩‍❤️‍💋‍👨", "✈️", "☕",
         "🤖", "🙂", "1️⃣", "#️⃣", "🫠", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"]
COMBINING = ["e\u0301", "a\u0308", "n\u0303", "o\u0302\u0323", "Z\u0351\u036b\u0343\u036a",
             "\u0301", "i\u0307\u0301"]
ODD = ["\ufffd", "Ã©", "Ã¼ber", "\u00ff\u00fe", "\\x80\\xff", "\u200b", "\u200d", "\ufeff",
       "\u202e", "\u2028", "\u2029", "\u0085", "\u00a0", "\u3000", "\u1680", "\u180e", "\u2007",
       "\x00", "\x01", "\x1b[31m", "\x7f", "\x1c\x1d\x1e\x1f", "\r\n", "\x0b\x0c", "\uffff",
       "\U0010fffd", "\U000e0001", "²³", "½", "Ⅻ", "𝟘𝟙", "ﬁ", "Å", "Ω", "µ", "İ", "ǅ"]
CONTRACTIONS = ["DON'T", "don't", "'S", "'s", "it's", "IT'S", "I'LL", "i'll", "we've", "WE'VE",
                "'ve'", "''s", "'''", "'t'", "'re", "you'd", "'m", "'ll", "rock'n'roll", "’s", "'"]
SPECIAL = [EOT, EOT + EOT, "a" + EOT + "b", " " + EOT + " ", "<|endoftext|", "<|endoftext",
           "<|endoftext|>>", "<<|endoftext|>", "<|EndOfText|>", "\n" + EOT + "\n", "<|", "|>"]


def byte_table():
    """GPT-2's byte -> printable character table, to name byte tokens."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def python_sources(limit_bytes):
    """Stdlib .py files (sorted, so the corpus is the same on every run of this Python)."""
    lib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for p in sorted(lib.glob("*.py")):
        try:
            t = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(t)
        total += len(t)
        if total >= limit_bytes:
            break
    return out


def sentence(rng):
    n = rng.randint(3, 18)
    ws = []
    for _ in range(n):
        r = rng.random()
        w = rng.choice(ACCENTED) if r < 0.08 else rng.choice(WORDS)
        if rng.random() < 0.1:
            w = w.capitalize()
        elif rng.random() < 0.03:
            w = w.upper()
        ws.append(w)
    s = " ".join(ws)
    return s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?", "...", ";", ":"])


def number(rng):
    r = rng.random()
    if r < 0.3:
        return str(rng.randint(0, 10 ** rng.randint(1, 20)))
    if r < 0.5:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if r < 0.7:
        return f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/{rng.randint(1900, 2100)}"
    if r < 0.85:
        return f"{rng.random():e}"
    return "0x" + "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(rng.randint(1, 16)))


def random_char(rng):
    """An assigned, non-surrogate code point from a random block."""
    while True:
        r = rng.random()
        if r < 0.4:
            cp = rng.randint(0x20, 0x7e)
        elif r < 0.6:
            cp = rng.randint(0x80, 0x7ff)
        elif r < 0.85:
            cp = rng.randint(0x800, 0xffff)
        else:
            cp = rng.randint(0x10000, 0x10ffff)
        if 0xd800 <= cp <= 0xdfff:
            continue
        c = chr(cp)
        if unicodedata.category(c) != "Cn":
            return c


def whitespace_mix(rng):
    parts = []
    for _ in range(rng.randint(1, 8)):
        r = rng.random()
        if r < 0.35:
            parts.append(" " * rng.randint(1, 70))
        elif r < 0.5:
            parts.append("\t" * rng.randint(1, 14))
        elif r < 0.65:
            parts.append("".join(rng.choice(" \t") for _ in range(rng.randint(1, 20))))
        elif r < 0.75:
            parts.append(rng.choice(["\n", "\n\n", "\r\n", "\n    ", "\n\t", " \n ", "\n" * 5]))
        elif r < 0.82:
            parts.append(rng.choice(["\u00a0", "\u3000", "\u2003", "\u0085", "\u2028", "\x0b", "\x0c"]))
        else:
            parts.append(rng.choice(WORDS + ["(", ")", "{", "}", "x", "1", "é", "я"]))
    return "".join(parts)


def code_chunk(rng, sources):
    src = rng.choice(sources)
    lines = src.split("\n")
    i = rng.randrange(len(lines))
    chunk = "\n".join(lines[i:i + rng.randint(1, 5)])
    if rng.random() < 0.2:
        chunk = chunk.replace("    ", "\t")
    return chunk


def mixed(rng):
    pools = [WORDS, ACCENTED, EMOJI, COMBINING, ODD, CONTRACTIONS, SPECIAL]
    out = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.6:
            out.append(rng.choice(rng.choice(pools)))
        elif r < 0.7:
            out.append(number(rng))
        elif r < 0.8:
            s = rng.choice(SCRIPTS)
            a = rng.randrange(len(s))
            out.append(s[a:a + rng.randint(1, 20)])
        else:
            out.append("".join(random_char(rng) for _ in range(rng.randint(1, 6))))
        out.append(rng.choice(["", " ", " ", "  ", "\n", "\t", "'", "-", ", "]))
    return "".join(out)


def corpus(rng, sources):
    parts = list(sources)
    for _ in range(40000):
        parts.append(sentence(rng))
    for _ in range(3000):
        parts.append(" ".join(SCRIPTS[rng.randrange(len(SCRIPTS))] for _ in range(3)))
        parts.append(" ".join(number(rng) for _ in range(5)))
        parts.append(mixed(rng))
    return parts


def build(rng):
    sources = python_sources(3_000_000)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                  use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False,
                                              use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=MODEL_VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(rng, sources), trainer=trainer)
    # Phi-2's layout: <|endoftext|> is the last id of the model vocab and a special added token
    # (normalized false); the whitespace runs are non-special added tokens after it.
    cfg = json.loads(tok.to_str())
    assert len(cfg["model"]["vocab"]) == MODEL_VOCAB, len(cfg["model"]["vocab"])
    cfg["model"]["vocab"][EOT] = MODEL_VOCAB
    tok = Tokenizer.from_str(json.dumps(cfg))
    tok.add_special_tokens([AddedToken(EOT, single_word=False, lstrip=False, rstrip=False,
                                       normalized=False, special=True)])
    tok.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=True,
                               special=False) for t in SPACE_RUNS + TAB_RUNS])
    assert tok.token_to_id(EOT) == MODEL_VOCAB
    return tok, sources


def test_strings(rng, sources):
    out = ["", " ", "  ", "\n", "\t", "a", "Hello world", "Hello, world!", " Hello", "hello  world",
           "x" * 3000, " " * 100, "\t" * 40, " \t \t  \t\t   \n\n \t", "a" * 257 + "b" * 3,
           "#" * 3, "###", "### Instruction:", "<|endoftext|>", "1234567890" * 5]
    out += ODD + CONTRACTIONS + SPECIAL + EMOJI + COMBINING + SCRIPTS + ACCENTED
    out += [c * n for c in " \t" for n in range(1, 70)]
    makers = [
        (0.22, lambda: sentence(rng) if rng.random() < 0.7 else " ".join(sentence(rng) for _ in range(2))),
        (0.22, lambda: code_chunk(rng, sources)),
        (0.14, lambda: whitespace_mix(rng)),
        (0.26, lambda: mixed(rng)),
        (0.06, lambda: " ".join(number(rng) for _ in range(rng.randint(1, 6)))),
        (0.05, lambda: "".join(random_char(rng) for _ in range(rng.randint(1, 30)))),
        (0.05, lambda: "".join(chr(rng.randint(0, 255)) for _ in range(rng.randint(1, 30)))),
    ]
    while len(out) < 10500:
        r, acc = rng.random(), 0.0
        for p, f in makers:
            acc += p
            if r < acc:
                out.append(f())
                break
        else:
            out.append(makers[0][1]())
    # A few long inputs for the streaming decoder and the benchmark.
    for _ in range(3):
        out.append("\n\n".join(code_chunk(rng, sources) for _ in range(12)))
    return out


def write_cases(path, tok, texts):
    buf = bytearray(b"TVTK")
    buf += struct.pack("<I", len(texts))
    for t in texts:
        b = t.encode("utf-8")
        ids = tok.encode(t).ids
        dec = tok.decode(ids, skip_special_tokens=False)
        buf += struct.pack("<I", len(b)) + b
        buf += struct.pack("<I", len(ids)) + struct.pack(f"<{len(ids)}H", *ids)
        if dec == t:
            buf += struct.pack("<I", 0xFFFFFFFF)
        else:
            d = dec.encode("utf-8")
            buf += struct.pack("<I", len(d)) + d
    path.write_bytes(bytes(buf))


def decode_cases(rng, tok):
    bt = byte_table()
    byte_id = {b: tok.token_to_id(c) for b, c in bt.items()}
    eot = tok.token_to_id(EOT)
    n_vocab = tok.get_vocab_size(with_added_tokens=True)
    cases = [[byte_id[0xE2], byte_id[ord("a")]],             # lone lead byte then ASCII
             [byte_id[0xE2], byte_id[0x82]],                 # truncated 3-byte sequence at end
             [byte_id[0xE2], byte_id[0x82], byte_id[0xAC]],  # complete: U+20AC
             [byte_id[0xF0], byte_id[0x9F], byte_id[0x98]],  # truncated 4-byte sequence
             [byte_id[0x80], byte_id[0xBF], byte_id[0xC0], byte_id[0xC1], byte_id[0xF5], byte_id[0xFF]],
             [byte_id[0xED], byte_id[0xA0], byte_id[0x80]],  # encoded surrogate
             [byte_id[0xC0], byte_id[0xAF]],                 # overlong
             [byte_id[0xE0], byte_id[0x80], byte_id[0x80]],
             [byte_id[0xF4], byte_id[0x90], byte_id[0x80], byte_id[0x80]],
             [byte_id[0xE2], eot, byte_id[0x82], byte_id[0xAC]],
             [eot, byte_id[0xC3], eot],
             [], [eot], [eot, eot],
             [tok.token_to_id(" " * 4), byte_id[0xE6], tok.token_to_id("\t" * 2)]]
    for _ in range(300):
        n = rng.randint(1, 12)
        if rng.random() < 0.5:
            ids = [byte_id[rng.choice([rng.randint(0x80, 0xFF), rng.randint(0, 0x7F)])] for _ in range(n)]
        else:
            ids = [rng.randrange(n_vocab) for _ in range(n)]
        cases.append(ids)
    buf = bytearray(b"TVTD") + struct.pack("<I", len(cases))
    for ids in cases:
        buf += struct.pack("<I", len(ids)) + struct.pack(f"<{len(ids)}H", *ids)
        for skip in (False, True):
            d = tok.decode(ids, skip_special_tokens=skip).encode("utf-8")
            buf += struct.pack("<I", len(d)) + d
    return bytes(buf)


def legacy_tokenizer(rng):
    """A tiny tokenizer.json whose merges use the old "a b" string form."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([sentence(rng) for _ in range(3000)], trainer=trainer)
    # Added tokens with the flags Phi-2 leaves off, to pin down HF's lstrip/rstrip/single_word.
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True),
                            AddedToken("[SEP]", rstrip=True, normalized=False, special=True)])
    tok.add_tokens([AddedToken("cat", single_word=True), AddedToken("dog", single_word=True,
                    lstrip=True, rstrip=True), AddedToken("é!", normalized=False),
                    AddedToken("wörd", single_word=True, normalized=False)])
    cfg = json.loads(tok.to_str())
    cfg["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in cfg["model"]["merges"]]
    return json.dumps(cfg, ensure_ascii=False, separators=(",", ":"))


def flag_strings(rng):
    """Text around the legacy tokenizer's flagged added tokens."""
    bits = ["<mask>", "[SEP]", "cat", "dog", "é!", "wörd", "the", "x", "_", "1", "é", " ",
            "　", " ", "  ", "\t", "\n", "!", "-", "concat", "cats", "hotdog", "ünicat"]
    out = ["the cat sat", "concatenate", "cat_dog", "  <mask>  x", "[SEP]   y", "dog", "é!é!",
           "catcat", "cat", " cat ", "a dog b", "a  dog  b", "\tdog\n", "wörd wörds", "xwörd"]
    while len(out) < 300:
        out.append("".join(rng.choice(bits) for _ in range(rng.randint(1, 10))))
    return out


def main(out_dir: pathlib.Path):
    rng = random.Random(20240611)
    tok, sources = build(rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"), pretty=False)
    tok.model.save(str(out_dir))  # vocab.json + merges.txt (model vocab, <|endoftext|> included)
    added = {t: tok.token_to_id(t) for t in SPACE_RUNS + TAB_RUNS}
    (out_dir / "added_tokens.json").write_text(json.dumps(added, separators=(",", ":")))
    # Reload from disk so the goldens come from exactly the committed file.
    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    texts = test_strings(rng, sources)
    write_cases(out_dir / "cases.bin", tok, texts)
    # Second loader: HF built from vocab.json + merges.txt must agree with tokenizer.json.
    ftok = Tokenizer(models.BPE.from_file(str(out_dir / "vocab.json"), str(out_dir / "merges.txt")))
    ftok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ftok.decoder = decoders.ByteLevel()
    ftok.add_special_tokens([AddedToken(EOT, normalized=False, special=True)])
    ftok.add_tokens([AddedToken(t, normalized=True) for t in added])
    sample = rng.sample(texts, 400)
    for t in sample:
        assert ftok.encode(t).ids == tok.encode(t).ids, t
    write_cases(out_dir / "cases_files.bin", ftok, sample)
    (out_dir / "decode.bin").write_bytes(decode_cases(rng, tok))
    legacy = legacy_tokenizer(rng)
    (out_dir / "legacy.json").write_text(legacy, encoding="utf-8")
    ltok = Tokenizer.from_str(legacy)
    write_cases(out_dir / "cases_legacy.bin", ltok, rng.sample(texts, 300) + flag_strings(rng))
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"tokenizer goldens: {len(texts)} strings, {total} bytes in {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
