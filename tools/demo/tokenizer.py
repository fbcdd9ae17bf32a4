"""The demo model's tokenizer: a Hugging Face byte-level BPE (GPT-2 / Phi-2 settings, the same
construction as tools/tinygptv/make_tiny.py) trained on the demo's own text: chat-template
prompts, questions and answers of training scenes. The chat template's strings (`<s>`, `[INST]`,
`[/INST]`, `<Img>`, `</Img>`, the task tags, the `{<x><y>...}` box syntax) are in every training
line, so BPE learns them as few tokens; `###` (TinyGPT-V's end symbol, the stop token) must be
one token, and `<|endoftext|>` is the last id, as 50256 is in Phi-2's.

    python3 tools/demo/tokenizer.py OUT.json
"""
from __future__ import annotations

import pathlib
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import scenes  # noqa: E402

VOCAB = 480            # trained size before <|endoftext|>; padded rows up to a multiple of 64
TEMPLATE = "<s>[INST] <Img><ImageHere></Img> {} [/INST]"
STOP = "###"
EOT = "<|endoftext|>"


def make_tokenizer(n_scenes: int = 3000) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                 use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False,
                                              use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(scenes.corpus(n_scenes), trainer=trainer)
    tok.add_special_tokens([EOT])
    if len(tok.encode(STOP).ids) != 1:
        raise RuntimeError(f"{STOP!r} must be one token (it is the stop token)")
    return tok


def padded_vocab(n: int) -> int:
    return (n + 63) // 64 * 64


if __name__ == "__main__":
    t = make_tokenizer()
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/demo_tokenizer.json")
    t.save(str(out))
    for s in (TEMPLATE.format("[refer] where is the red star?") + " {<12><40><31><59>}",
              TEMPLATE.format("[caption] Describe this image.")):
        e = t.encode(s)
        print(len(e.ids), e.tokens)
    print("vocab", t.get_vocab_size(), "->", out)
