"""The demo model as trainable PyTorch modules, with TinyGPT-V's topology at small widths, and its
export to the ORIGINAL file formats (the ones tools/tinygptv/make_tiny.py describes):

  EVA ViT (patch 14, q/v-only qkv bias, erf GELU, no final norm) -> ln_vision -> Q-Former
  (post-LN BERT layers, cross-attention on even layers) -> llama_proj -> llama_proj2 -> Phi
  (fused per-head query_key_value, q/k LayerNorm before partial NeoX RoPE, post-attention RMSNorm,
  parallel MLP, LoRA on query_key_value and dense).

The math is the same as tools/tinygptv/reference.py's (which detaches everything, so it cannot
train); export() writes the files and train.py checks that reference.py, loading them, gives
the same logits as these modules.

Head sizes are deliberately not powers of two: ViT 3 x 44, Q-Former 3 x 24, Phi 3 x 40 (rotary 16).
"""
from __future__ import annotations

import json
import math
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

CFG = {
    "vit": {"img_size": 112, "patch": 14, "width": 132, "heads": 3, "depth": 4, "mlp": 528,
            "eps": 1e-6},
    "qformer": {"width": 72, "heads": 3, "layers": 4, "ffn": 288, "queries": 16, "cross_freq": 2,
                "eps": 1e-12},
    "proj_hidden": 256,             # stands for llama_proj's 4096
    "phi": {"hidden": 120, "heads": 3, "layers": 4, "ffn": 480, "partial_rotary_factor": 0.4,
            "rope_theta": 10000.0, "layer_norm_eps": 1e-5, "rms_eps": 1e-6},
    "lora": {"r": 16, "alpha": 16},
}
LORA_PRE = "llama_model.base_model.model."


def attend(q, k, v, heads, causal=False):
    """q (B,T,C), k/v (B,S,C) -> (B,T,C); heads split on C; softmax(q k^T / sqrt(d)) v."""
    b, t, c = q.shape
    s = k.shape[1]
    q = q.view(b, t, heads, c // heads).transpose(1, 2)
    k = k.view(b, s, heads, c // heads).transpose(1, 2)
    v = v.view(b, s, heads, c // heads).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return o.transpose(1, 2).reshape(b, t, c)


# ----------------------------------------------------------------------------------------------
# vision

class EvaBlock(nn.Module):
    def __init__(self, w, heads, mlp, eps):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(w, eps=eps), nn.LayerNorm(w, eps=eps)
        self.qkv = nn.Linear(w, 3 * w, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(w)), nn.Parameter(torch.zeros(w))
        self.proj = nn.Linear(w, w)
        self.fc1, self.fc2 = nn.Linear(w, mlp), nn.Linear(mlp, w)

    def forward(self, x):
        h = self.norm1(x)
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = F.linear(h, self.qkv.weight, bias).chunk(3, dim=-1)
        x = x + self.proj(attend(q, k, v, self.heads))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def sincos_2d(grid: int, w: int) -> torch.Tensor:
    """(1, 1+grid*grid, w) position embedding init: half the channels encode the row, half the
    column (sin/cos at geometric frequencies, as MAE does); CLS row 0. Trained afterwards, but
    starting from it the model learns where things are far sooner than from small noise."""
    quarter = w // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    pos = torch.arange(grid, dtype=torch.float32)
    ang = pos[:, None] * freq[None] * math.pi / 2
    enc = torch.cat([ang.sin(), ang.cos()], dim=1)                   # (grid, 2*quarter)
    rows = enc[:, None, :].expand(grid, grid, -1)
    cols = enc[None, :, :].expand(grid, grid, -1)
    table = torch.zeros(1 + grid * grid, w)
    table[1:, : 4 * quarter] = torch.cat([rows, cols], dim=-1).reshape(grid * grid, -1)
    return table[None]


class Vision(nn.Module):
    """EVA ViT + ln_vision + Q-Former + llama_proj + llama_proj2: pixels -> image embeddings."""

    def __init__(self):
        super().__init__()
        v, q = CFG["vit"], CFG["qformer"]
        w, n = v["width"], (v["img_size"] // v["patch"]) ** 2
        self.patch = nn.Conv2d(3, w, v["patch"], stride=v["patch"])
        self.cls = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.pos = nn.Parameter(sincos_2d(v["img_size"] // v["patch"], w))
        self.blocks = nn.ModuleList(EvaBlock(w, v["heads"], v["mlp"], v["eps"]) for _ in range(v["depth"]))
        self.ln_vision = nn.LayerNorm(w, eps=1e-5)
        self.qformer = QFormer(w)
        self.proj1 = nn.Linear(q["width"], CFG["proj_hidden"])
        self.proj2 = nn.Linear(CFG["proj_hidden"], CFG["phi"]["hidden"])

    def encode(self, pixels):
        """(B,3,S,S) -> Q-Former output (B, queries, qformer width)."""
        x = self.patch(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.qformer(self.ln_vision(x))

    def forward(self, pixels):
        return self.proj2(self.proj1(self.encode(pixels)))


class BertAttn(nn.Module):
    def __init__(self, w, kv_in, heads, eps):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(w, w), nn.Linear(kv_in, w), nn.Linear(kv_in, w)
        self.dense, self.norm = nn.Linear(w, w), nn.LayerNorm(w, eps=eps)

    def forward(self, x, ctx):
        o = attend(self.query(x), self.key(ctx), self.value(ctx), self.heads)
        return self.norm(x + self.dense(o))


class QFormer(nn.Module):
    def __init__(self, vision_width):
        super().__init__()
        q = CFG["qformer"]
        w = q["width"]
        self.query_tokens = nn.Parameter(torch.randn(1, q["queries"], w) * 0.02)
        self.emb_norm = nn.LayerNorm(w, eps=q["eps"])
        self.self_attn = nn.ModuleList(BertAttn(w, w, q["heads"], q["eps"]) for _ in range(q["layers"]))
        self.cross = nn.ModuleDict({str(i): BertAttn(w, vision_width, q["heads"], q["eps"])
                                    for i in range(0, q["layers"], q["cross_freq"])})
        self.fc1 = nn.ModuleList(nn.Linear(w, q["ffn"]) for _ in range(q["layers"]))
        self.fc2 = nn.ModuleList(nn.Linear(q["ffn"], w) for _ in range(q["layers"]))
        self.out_norm = nn.ModuleList(nn.LayerNorm(w, eps=q["eps"]) for _ in range(q["layers"]))

    def forward(self, img):
        q = self.emb_norm(self.query_tokens.expand(img.shape[0], -1, -1))
        for i in range(len(self.self_attn)):
            q = self.self_attn[i](q, q)
            if str(i) in self.cross:
                q = self.cross[str(i)](q, img)
            q = self.out_norm[i](q + self.fc2[i](F.gelu(self.fc1[i](q))))
        return q


# ----------------------------------------------------------------------------------------------
# Phi

def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class LoraLinear(nn.Module):
    """y = W x + b + (alpha/r) B(A x); A, B exist only once add_lora() ran (B starts at 0)."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.base = nn.Linear(n_in, n_out)
        self.lora_A = self.lora_B = None

    def add_lora(self, r, alpha, gen):
        n_out, n_in = self.base.weight.shape
        self.lora_A = nn.Parameter(torch.randn(r, n_in, generator=gen) * n_in ** -0.5)
        self.lora_B = nn.Parameter(torch.zeros(n_out, r))
        self.scale = alpha / r

    def forward(self, x):
        y = self.base(x)
        if self.lora_A is not None:
            y = y + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)
        return y


class PhiLayer(nn.Module):
    def __init__(self):
        super().__init__()
        c = CFG["phi"]
        h, self.heads = c["hidden"], c["heads"]
        d = h // self.heads
        self.input_layernorm = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.qkv = LoraLinear(h, 3 * h)
        # q/k norms: weight only (TinyGPT-V trains only norm weights; the bias stays 0)
        self.q_norm = nn.Parameter(torch.ones(d))
        self.k_norm = nn.Parameter(torch.ones(d))
        self.dense = LoraLinear(h, h)
        self.post_norm = nn.Parameter(torch.ones(h))     # LlamaRMSNorm weight
        self.fc1, self.fc2 = nn.Linear(h, c["ffn"]), nn.Linear(c["ffn"], h)
        self.eps, self.rms_eps = c["layer_norm_eps"], c["rms_eps"]
        self.rot = int(c["partial_rotary_factor"] * d)

    def forward(self, x, cos, sin):
        b, t, h = x.shape
        d = h // self.heads
        hn = self.input_layernorm(x)
        qkv = self.qkv(hn).view(b, t, self.heads, 3, d)       # per-head interleaved rows
        q = F.layer_norm(qkv[..., 0, :], (d,), self.q_norm, None, self.eps).transpose(1, 2)
        k = F.layer_norm(qkv[..., 1, :], (d,), self.k_norm, None, self.eps).transpose(1, 2)
        v = qkv[..., 2, :].transpose(1, 2)
        q, k = rope(q, cos, sin, self.rot), rope(k, cos, sin, self.rot)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, h)
        o = self.dense(o)
        o = self.post_norm * (o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.rms_eps))
        return x + o + self.fc2(gelu_new(self.fc1(hn)))


def rope(x, cos, sin, rot):
    xr, xp = x[..., :rot], x[..., rot:]
    x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
    return torch.cat([xr * cos + torch.cat([-x2, x1], dim=-1) * sin, xp], dim=-1)


class Phi(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        c = CFG["phi"]
        h = c["hidden"]
        self.embed = nn.Embedding(vocab, h)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.layers = nn.ModuleList(PhiLayer() for _ in range(c["layers"]))
        self.final_layernorm = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.lm_head = nn.Linear(h, vocab)
        self.rot = int(c["partial_rotary_factor"] * h // c["heads"])
        self.theta = c["rope_theta"]

    def forward(self, embeds):
        t = embeds.shape[1]
        inv = 1.0 / (self.theta ** (torch.arange(0, self.rot, 2, dtype=torch.float32) / self.rot))
        f = torch.arange(t, dtype=torch.float32)[:, None] * inv[None]
        emb = torch.cat([f, f], dim=-1).to(embeds.device)
        cos, sin = emb.cos(), emb.sin()
        x = embeds
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.final_layernorm(x))


class Demo(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vision = Vision()
        self.phi = Phi(vocab)

    def add_lora(self, gen):
        lo = CFG["lora"]
        for layer in self.phi.layers:
            layer.qkv.add_lora(lo["r"], lo["alpha"], gen)
            layer.dense.add_lora(lo["r"], lo["alpha"], gen)


# ----------------------------------------------------------------------------------------------
# export to the original formats

def _c(t):
    return t.detach().to("cpu", torch.float32).contiguous().clone()


def eva_state(m: Vision) -> dict:
    sd = {"cls_token": m.cls, "pos_embed": m.pos, "patch_embed.proj.weight": m.patch.weight,
          "patch_embed.proj.bias": m.patch.bias}
    for i, b in enumerate(m.blocks):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": b.norm1.weight, p + "norm1.bias": b.norm1.bias,
                   p + "attn.qkv.weight": b.qkv.weight, p + "attn.q_bias": b.q_bias,
                   p + "attn.v_bias": b.v_bias, p + "attn.proj.weight": b.proj.weight,
                   p + "attn.proj.bias": b.proj.bias, p + "norm2.weight": b.norm2.weight,
                   p + "norm2.bias": b.norm2.bias, p + "mlp.fc1.weight": b.fc1.weight,
                   p + "mlp.fc1.bias": b.fc1.bias, p + "mlp.fc2.weight": b.fc2.weight,
                   p + "mlp.fc2.bias": b.fc2.bias})
    return {k: _c(v).half() for k, v in sd.items()}     # LAVIS's eva_vit_g.pth is fp16


def _lin(sd, name, mod):
    sd[name + ".weight"], sd[name + ".bias"] = mod.weight, mod.bias


def _ln(sd, name, mod):
    sd[name + ".weight"], sd[name + ".bias"] = mod.weight, mod.bias


def blip2_state(m: Vision) -> dict:
    qf = m.qformer
    sd = {}
    _ln(sd, "ln_vision", m.ln_vision)
    sd["query_tokens"] = qf.query_tokens
    pre = "Qformer.bert."
    _ln(sd, pre + "embeddings.LayerNorm", qf.emb_norm)
    for i in range(len(qf.self_attn)):
        p = f"{pre}encoder.layer.{i}."
        kinds = [("attention.", qf.self_attn[i])]
        if str(i) in qf.cross:
            kinds.append(("crossattention.", qf.cross[str(i)]))
        for a, mod in kinds:
            for n in ("query", "key", "value"):
                _lin(sd, p + a + "self." + n, getattr(mod, n))
            _lin(sd, p + a + "output.dense", mod.dense)
            _ln(sd, p + a + "output.LayerNorm", mod.norm)
        _lin(sd, p + "intermediate_query.dense", qf.fc1[i])
        _lin(sd, p + "output_query.dense", qf.fc2[i])
        _ln(sd, p + "output_query.LayerNorm", qf.out_norm[i])
    return {k: _c(v) for k, v in sd.items()}


def phi_base_state(m: Phi) -> dict:
    """The HF folder's tensors (fused layout). No q/k/post norms: like Phi-2's folder."""
    sd = {"model.embed_tokens.weight": m.embed.weight}
    for i, layer in enumerate(m.layers):
        p = f"model.layers.{i}."
        _lin(sd, p + "self_attn.query_key_value", layer.qkv.base)
        _lin(sd, p + "self_attn.dense", layer.dense.base)
        _lin(sd, p + "mlp.fc1", layer.fc1)
        _lin(sd, p + "mlp.fc2", layer.fc2)
        _ln(sd, p + "input_layernorm", layer.input_layernorm)
    _ln(sd, "model.final_layernorm", m.final_layernorm)
    _lin(sd, "lm_head", m.lm_head)
    return {k: _c(v) for k, v in sd.items()}


def stage4_model_state(d: Demo) -> dict:
    """Only what TinyGPT-V trains after stage 1, in registration order: LoRA, norm weights,
    projections (fp32, peft key names with '.default.')."""
    sd = {}
    pre = LORA_PRE + "model."
    for i, layer in enumerate(d.phi.layers):
        p = f"{pre}layers.{i}."
        for name, mod in (("query_key_value", layer.qkv), ("dense", layer.dense)):
            sd[f"{p}self_attn.{name}.lora_A.default.weight"] = mod.lora_A
            sd[f"{p}self_attn.{name}.lora_B.default.weight"] = mod.lora_B
        sd[p + "self_attn.q_layernorm.weight"] = layer.q_norm
        sd[p + "self_attn.k_layernorm.weight"] = layer.k_norm
        sd[p + "input_layernorm.weight"] = layer.input_layernorm.weight
        sd[p + "post_layernorm.weight"] = layer.post_norm
    sd[pre + "final_layernorm.weight"] = d.phi.final_layernorm.weight
    _lin(sd, "llama_proj", d.vision.proj1)
    _lin(sd, "llama_proj2", d.vision.proj2)
    return {k: _c(v) for k, v in sd.items()}


def phi_config(vocab: int, eot: int) -> dict:
    c = CFG["phi"]
    return {
        "architectures": ["PhiForCausalLM"], "model_type": "phi",
        "hidden_size": c["hidden"], "intermediate_size": c["ffn"],
        "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"],
        "num_key_value_heads": c["heads"], "hidden_act": "gelu_new",
        "max_position_embeddings": 256, "layer_norm_eps": c["layer_norm_eps"],
        "partial_rotary_factor": c["partial_rotary_factor"], "rope_theta": c["rope_theta"],
        "rope_scaling": None, "qk_layernorm": False, "vocab_size": vocab,
        "tie_word_embeddings": False, "bos_token_id": eot, "eos_token_id": eot,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float16",
        "_tinyvlm_layout": "fused query_key_value, rows per head [q|k|v] (TinyGPT-V modeling_phi.py)",
    }


def export(d: Demo, out: pathlib.Path, tokenizer_json: pathlib.Path, eot: int, optimizer: dict,
           epoch: int):
    """Writes eva_vit_g.pth, blip2_pretrained_flant5xxl.pth, TinyGPT-V_for_Stage4.pth and phi/."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(eva_state(d.vision), out / "eva_vit_g.pth")
    torch.save({"model": blip2_state(d.vision)}, out / "blip2_pretrained_flant5xxl.pth")
    lo = CFG["lora"]
    config = {"model": {"arch": "minigpt_v2", "image_size": CFG["vit"]["img_size"],
                        "end_sym": "###", "chat_template": True, "lora_r": lo["r"],
                        "lora_alpha": lo["alpha"], "max_txt_len": 256, "ckpt": None},
              "run": {"task": "image_text_pretrain", "seed": 42, "amp": False}}
    torch.save({"model": stage4_model_state(d), "optimizer": optimizer, "config": config,
                "scaler": None, "epoch": epoch}, out / "TinyGPT-V_for_Stage4.pth")
    phi = out / "phi"
    phi.mkdir(exist_ok=True)
    vocab = d.phi.embed.weight.shape[0]
    save_file({k: v.half() for k, v in phi_base_state(d.phi).items()},
              str(phi / "model.safetensors"), metadata={"format": "pt"})
    (phi / "config.json").write_text(json.dumps(phi_config(vocab, eot), indent=2, sort_keys=True) + "\n")
    (phi / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
