"""Writes a tiny random TinyGPT-V in the ORIGINAL file formats users have (seeded; a rerun writes
byte-identical files):

  eva_vit_g.pth                    flat state dict, fp16 (as LAVIS's eva_vit_g.pth), pos_embed for a
                                   3x3 grid (the 84-pixel model needs 6x6: the bicubic resize runs)
  blip2_pretrained_flant5xxl.pth   {'model': {...}} fp32: ln_vision, query_tokens, Qformer.* incl. the
                                   text-branch keys TinyGPT-V ignores (word/position embeddings,
                                   intermediate/output, an int64 position_ids buffer), t5_proj
  TinyGPT-V_for_Stage4.pth         {'model', 'optimizer', 'config', 'scaler', 'epoch'} as
                                   runner_base._save_checkpoint writes it; 'model' holds only the
                                   trainable tensors, fp32, peft key names with '.default.'
  phi_fused/                       HF folder, fused query_key_value (TinyGPT-V's modeling_phi.py), fp16
  phi_split/                       HF folder, q_proj/k_proj/v_proj (today's microsoft/phi-2), fp16
  tokenizer.json                   byte-level BPE (GPT-2 settings) + <|endoftext|>; copied into both folders

Sizes are tiny but head dims are not powers of two (ViT 2x44, Q-Former 2x24, Phi 2x40, rotary 16).
"""
import json
import pathlib
import shutil

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SEED = 20240611
TINY = {
    "vit": {"img_size": 84, "patch": 14, "width": 88, "heads": 2, "depth": 2, "mlp": 384,
            "eps": 1e-6, "ckpt_grid": 3},
    "qformer": {"width": 48, "heads": 2, "layers": 2, "ffn": 192, "queries": 8, "cross_freq": 2,
                "eps": 1e-12},
    "proj_hidden": 112,              # stands for the 4096 of llama_proj
    "phi": {"hidden": 80, "heads": 2, "layers": 2, "ffn": 320, "partial_rotary_factor": 0.4,
            "rope_theta": 10000.0, "layer_norm_eps": 1e-5},
    "lora": {"r": 8, "alpha": 4},    # scale alpha/r = 0.5 (the real model: 64, 16 -> 0.25)
    "vocab_train": 420,
}

CORPUS = [
    "<s>[INST] <Img><ImageHere></Img> What is in the image? [/INST]",
    "<s>[INST] <Img><ImageHere></Img> [vqa] What colour is the cat? [/INST]",
    "<s>[INST] <Img><ImageHere></Img> [caption] Describe this picture. [/INST]",
    "###Human: Hello there. ###Assistant: Hello! How can I help you today?",
    "The image shows a red square on a blue background with a small green circle.",
    "A cat is sitting on the table next to a cup of coffee and a book.",
    "There are two dogs playing in the park under a bright sun.",
    "### Instruct: describe the image. Output: a photo of a street at night.",
    "def main():\n    print('hello world')\n    return 0\n",
    "The quick brown fox jumps over the lazy dog. ###",
    "What is the colour of the sky? The sky is blue. ### The grass is green.",
]


def rand(gen, *shape, std=1.0, mean=0.0):
    return torch.randn(*shape, generator=gen) * std + mean


def make_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                 use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False,
                                              use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=TINY["vocab_train"], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    tok.add_special_tokens(["<|endoftext|>"])        # last id, as 50256 in GPT-2 / Phi-2
    if len(tok.encode("###").ids) != 1:
        raise RuntimeError("'###' must be one token (it is the stop token)")
    return tok


def padded_vocab(n: int) -> int:
    return (n + 63) // 64 * 64     # Phi-2 pads 50295 tokenizer ids to 51200 rows


# ----------------------------------------------------------------------------------------------

def vit_state(gen) -> dict:
    c = TINY["vit"]
    w, m = c["width"], c["mlp"]
    sd = {
        "cls_token": rand(gen, 1, 1, w, std=0.5),
        "pos_embed": rand(gen, 1, 1 + c["ckpt_grid"] ** 2, w, std=0.5),
        "patch_embed.proj.weight": rand(gen, w, 3, c["patch"], c["patch"], std=(3 * 196) ** -0.5),
        "patch_embed.proj.bias": rand(gen, w, std=0.1),
    }
    for i in range(c["depth"]):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": rand(gen, w, std=0.2, mean=1.0), p + "norm1.bias": rand(gen, w, std=0.1),
            p + "attn.q_bias": rand(gen, w, std=0.1), p + "attn.v_bias": rand(gen, w, std=0.1),
            p + "attn.qkv.weight": rand(gen, 3 * w, w, std=w ** -0.5),
            p + "attn.proj.weight": rand(gen, w, w, std=w ** -0.5), p + "attn.proj.bias": rand(gen, w, std=0.1),
            p + "norm2.weight": rand(gen, w, std=0.2, mean=1.0), p + "norm2.bias": rand(gen, w, std=0.1),
            p + "mlp.fc1.weight": rand(gen, m, w, std=w ** -0.5), p + "mlp.fc1.bias": rand(gen, m, std=0.1),
            p + "mlp.fc2.weight": rand(gen, w, m, std=m ** -0.5), p + "mlp.fc2.bias": rand(gen, w, std=0.1),
        })
    return {k: v.half() for k, v in sd.items()}


def lin(sd, gen, name, n_out, n_in, bias_std=0.1):
    sd[name + ".weight"] = rand(gen, n_out, n_in, std=n_in ** -0.5)
    sd[name + ".bias"] = rand(gen, n_out, std=bias_std)


def ln(sd, gen, name, n):
    sd[name + ".weight"] = rand(gen, n, std=0.2, mean=1.0)
    sd[name + ".bias"] = rand(gen, n, std=0.1)


def blip2_state(gen) -> dict:
    q, vw = TINY["qformer"], TINY["vit"]["width"]
    w, f = q["width"], q["ffn"]
    sd = {}
    ln(sd, gen, "ln_vision", vw)
    sd["query_tokens"] = rand(gen, 1, q["queries"], w)
    pre = "Qformer.bert."
    sd[pre + "embeddings.word_embeddings.weight"] = rand(gen, 40, w, std=0.02)   # unused text branch
    sd[pre + "embeddings.position_embeddings.weight"] = rand(gen, 16, w, std=0.02)
    sd[pre + "embeddings.position_ids"] = torch.arange(16, dtype=torch.int64)[None]
    ln(sd, gen, pre + "embeddings.LayerNorm", w)
    for i in range(q["layers"]):
        p = f"{pre}encoder.layer.{i}."
        kinds = [("attention.", w)] + ([("crossattention.", vw)] if i % q["cross_freq"] == 0 else [])
        for a, kv_in in kinds:
            lin(sd, gen, p + a + "self.query", w, w)
            lin(sd, gen, p + a + "self.key", w, kv_in)
            lin(sd, gen, p + a + "self.value", w, kv_in)
            lin(sd, gen, p + a + "output.dense", w, w)
            ln(sd, gen, p + a + "output.LayerNorm", w)
        lin(sd, gen, p + "intermediate.dense", f, w)           # text branch: ignored by TinyGPT-V
        lin(sd, gen, p + "output.dense", w, f)
        ln(sd, gen, p + "output.LayerNorm", w)
        lin(sd, gen, p + "intermediate_query.dense", f, w)
        lin(sd, gen, p + "output_query.dense", w, f)
        ln(sd, gen, p + "output_query.LayerNorm", w)
    lin(sd, gen, "t5_proj", 24, w)                              # BLIP-2 T5 projection: ignored
    return sd


def phi_base(gen, vocab: int, n_tokens: int) -> dict:
    """Fused layout: query_key_value rows = head*3*D + {q,k,v}*D + d (TinyGPT-V modeling_phi).
    Padding rows (ids the tokenizer never makes) get zero embeddings and an lm_head row that is
    zero with bias -30, so greedy decoding never picks an id that has no text."""
    c = TINY["phi"]
    h, f = c["hidden"], c["ffn"]
    sd = {"model.embed_tokens.weight": rand(gen, vocab, h)}
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        lin(sd, gen, p + "self_attn.query_key_value", 3 * h, h)
        lin(sd, gen, p + "self_attn.dense", h, h)
        lin(sd, gen, p + "mlp.fc1", f, h)
        lin(sd, gen, p + "mlp.fc2", h, f)
        ln(sd, gen, p + "input_layernorm", h)
    ln(sd, gen, "model.final_layernorm", h)
    lin(sd, gen, "lm_head", vocab, h)
    sd["model.embed_tokens.weight"][n_tokens:] = 0.0
    sd["lm_head.weight"][n_tokens:] = 0.0
    sd["lm_head.bias"][n_tokens:] = -30.0
    return sd


def fused_to_split(sd: dict, heads: int) -> dict:
    out = {}
    for k, v in sd.items():
        if ".query_key_value." not in k:
            out[k] = v
            continue
        per = v.reshape(heads, 3, v.shape[0] // (3 * heads), *v.shape[1:])
        for j, n in enumerate("qkv"):
            out[k.replace("query_key_value", f"{n}_proj")] = per[:, j].reshape(-1, *v.shape[1:]).contiguous()
    return out


def phi_config(vocab: int, eot: int, fused: bool) -> dict:
    c = TINY["phi"]
    cfg = {
        "architectures": ["PhiForCausalLM"], "model_type": "phi",
        "hidden_size": c["hidden"], "intermediate_size": c["ffn"],
        "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"],
        "num_key_value_heads": c["heads"], "hidden_act": "gelu_new",
        "max_position_embeddings": 2048, "layer_norm_eps": c["layer_norm_eps"],
        "partial_rotary_factor": c["partial_rotary_factor"], "rope_theta": c["rope_theta"],
        "rope_scaling": None, "qk_layernorm": False, "vocab_size": vocab,
        "tie_word_embeddings": False, "bos_token_id": eot, "eos_token_id": eot,
        "resid_pdrop": 0.1, "embd_pdrop": 0.0, "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float16",
    }
    if fused:
        cfg["_tinyvlm_layout"] = "fused query_key_value, rows per head [q|k|v] (TinyGPT-V modeling_phi.py)"
    return cfg


def stage4_state(gen, vocab: int) -> dict:
    """Trainable tensors only, in module registration order (llama_model first, then projections)."""
    c, lo = TINY["phi"], TINY["lora"]
    h, d, r = c["hidden"], c["hidden"] // c["heads"], lo["r"]
    sd = {}
    pre = "llama_model.base_model.model.model."
    for i in range(c["layers"]):
        p = f"{pre}layers.{i}."
        for mod, n_out in (("query_key_value", 3 * h), ("dense", h)):
            sd[f"{p}self_attn.{mod}.lora_A.default.weight"] = rand(gen, r, h, std=h ** -0.5)
            sd[f"{p}self_attn.{mod}.lora_B.default.weight"] = rand(gen, n_out, r, std=0.3)
        sd[p + "self_attn.q_layernorm.weight"] = rand(gen, d, std=0.2, mean=1.0)
        sd[p + "self_attn.k_layernorm.weight"] = rand(gen, d, std=0.2, mean=1.0)
        sd[p + "input_layernorm.weight"] = rand(gen, h, std=0.2, mean=1.0)
        sd[p + "post_layernorm.weight"] = rand(gen, h, std=0.2, mean=1.0)
    sd[pre + "final_layernorm.weight"] = rand(gen, h, std=0.2, mean=1.0)
    q = TINY["qformer"]["width"]
    lin(sd, gen, "llama_proj", TINY["proj_hidden"], q)
    lin(sd, gen, "llama_proj2", h, TINY["proj_hidden"])
    return sd


def stage4_file(gen, vocab: int) -> dict:
    model = stage4_state(gen, vocab)
    first = [k for k in model][:2]
    optimizer = {   # the shape torch.optim.AdamW.state_dict() has; a converter must skip it
        "state": {0: {"step": torch.tensor(4000.0), "exp_avg": torch.zeros_like(model[first[0]]),
                      "exp_avg_sq": torch.zeros_like(model[first[0]])}},
        "param_groups": [{"lr": 8e-05, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.05,
                          "amsgrad": False, "foreach": None, "maximize": False,
                          "capturable": False, "differentiable": False, "fused": None,
                          "params": [0, 1]}],
    }
    config = {"model": {"arch": "minigpt_v2", "image_size": TINY["vit"]["img_size"],
                        "end_sym": "###", "chat_template": True, "lora_r": TINY["lora"]["r"],
                        "lora_alpha": TINY["lora"]["alpha"], "max_txt_len": 1024, "ckpt": None},
              "run": {"task": "image_text_pretrain", "seed": 42, "amp": True}}
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
              "growth_interval": 2000, "_growth_tracker": 17}
    return {"model": model, "optimizer": optimizer, "config": config, "scaler": scaler, "epoch": 4}


def write_phi_folder(folder: pathlib.Path, sd: dict, cfg: dict, tok_path: pathlib.Path):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(tok_path, folder / "tokenizer.json")


def main(out: pathlib.Path) -> dict:
    """Writes the tiny model under `out`; returns TINY plus the vocab figures."""
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)
    tok = make_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    vocab = padded_vocab(n_tok)
    eot = tok.token_to_id("<|endoftext|>")

    torch.save(vit_state(gen), out / "eva_vit_g.pth")
    torch.save({"model": blip2_state(gen)}, out / "blip2_pretrained_flant5xxl.pth")
    base = phi_base(gen, vocab, n_tok)
    torch.save(stage4_file(gen, vocab), out / "TinyGPT-V_for_Stage4.pth")
    heads = TINY["phi"]["heads"]
    write_phi_folder(out / "phi_fused", base, phi_config(vocab, eot, True), out / "tokenizer.json")
    write_phi_folder(out / "phi_split", fused_to_split(base, heads), phi_config(vocab, eot, False),
                     out / "tokenizer.json")
    return dict(TINY, n_tokens=n_tok, vocab=vocab, eot_id=eot,
                stop_id=tok.token_to_id("###"))


if __name__ == "__main__":
    import sys
    print(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tinygptv_model")))
