"""PyTorch reference for TinyGPT-V (stage 4): the numbers the C engine must reproduce.

Written for tinyvlm from the public TinyGPT-V code (DLYuanGod/TinyGPT-V: minigpt4/models/eva_vit.py,
Qformer.py, minigpt_v2.py, minigpt_base.py, conversation.py, and the modeling_phi.py it asks users
to copy over transformers' own). No code is copied; the math and the file/key conventions are.

Everything runs in fp32 on CPU. (TinyGPT-V itself runs the ViT's Linear/Conv weights in fp16 and
the rest under autocast; our goldens are the fp32 math, the tolerance target for the engine.)

It loads weights only from the ORIGINAL formats, the way TinyGPT-V does:
  eva_vit_g.pth                   flat state dict; pos_embed resized bicubically to the target grid
  blip2_pretrained_flant5xxl.pth  {'model': {...}}: ln_vision.*, query_tokens, Qformer.* (extra
                                  text-branch keys are ignored, as load_state_dict(strict=False) does)
  TinyGPT-V_for_Stage4.pth        {'model': {...}}: llama_proj*, LoRA A/B, trained norm weights
  an HF Phi folder                config.json + model.safetensors, fused query_key_value or split
                                  q_proj/k_proj/v_proj (both become the fused per-head layout)
"""
from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
LORA_PREFIX = "llama_model.base_model.model."   # peft wrapper around PhiForCausalLM
IMAGE_TAG = "<ImageHere>"


# ----------------------------------------------------------------------------------------------
# configuration

@dataclass
class VitCfg:
    img_size: int = 448
    patch: int = 14
    width: int = 1408
    heads: int = 16
    depth: int = 39
    mlp: int = 6144          # int(1408 * 4.3637)
    eps: float = 1e-6


@dataclass
class QfCfg:
    width: int = 768
    heads: int = 12
    layers: int = 12
    ffn: int = 3072
    queries: int = 32
    cross_freq: int = 2
    eps: float = 1e-12


@dataclass
class PhiCfg:
    hidden: int = 2560
    heads: int = 32
    layers: int = 32
    ffn: int = 10240
    vocab: int = 51200
    rotary: int = 32         # partial_rotary_factor 0.4 * head_dim 80
    theta: float = 10000.0
    eps: float = 1e-5        # LayerNorms (input, q/k, final)
    rms_eps: float = 1e-6    # post_layernorm (LlamaRMSNorm default)
    lora_r: int = 64
    lora_alpha: int = 16

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def phi_cfg_from_folder(folder: pathlib.Path, lora_r: int, lora_alpha: int) -> PhiCfg:
    c = json.loads((folder / "config.json").read_text())
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    return PhiCfg(hidden=c["hidden_size"], heads=c["num_attention_heads"],
                  layers=c["num_hidden_layers"], ffn=c["intermediate_size"],
                  vocab=c["vocab_size"], rotary=int(c["partial_rotary_factor"] * head_dim),
                  theta=float(c.get("rope_theta", 10000.0)), eps=c["layer_norm_eps"],
                  lora_r=lora_r, lora_alpha=lora_alpha)


# ----------------------------------------------------------------------------------------------
# preprocessing (Blip2ImageEvalProcessor: Resize((S,S), BICUBIC) -> ToTensor -> Normalize)

def preprocess(img: Image.Image, size: int) -> torch.Tensor:
    """(1,3,S,S) fp32. torchvision's Resize on a PIL image is PIL's resize (antialiased bicubic)."""
    img = img.convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


# ----------------------------------------------------------------------------------------------
# small helpers

def f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32)


def layer_norm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), f32(w), None if b is None else f32(b), eps)


def rms_norm(x, w, eps):
    # LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * w, no bias, no mean subtraction
    return f32(w) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def linear(x, sd, prefix, bias=True):
    return F.linear(x, f32(sd[prefix + ".weight"]), f32(sd[prefix + ".bias"]) if bias else None)


def attention(q, k, v, causal=False):
    """q,k,v: (B,H,T,D) already split into heads; q unscaled. softmax in fp32."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        t, s = scores.shape[-2:]
        mask = torch.ones(t, s, dtype=torch.bool).triu(1 + s - t)
        scores = scores.masked_fill(mask, float("-inf"))
    return scores.softmax(-1) @ v


def split_heads(x, heads):
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def merge_heads(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


# ----------------------------------------------------------------------------------------------
# EVA ViT-g (eva_vit.py: create_eva_vit_g, interpolate_pos_embed, Block, Attention)

def resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """pos (1, 1+g*g, C) from the checkpoint -> (1, 1+grid*grid, C): CLS slot kept, the grid
    interpolated with F.interpolate(bicubic, align_corners=False) in fp32, as LAVIS does."""
    pos = f32(pos)
    c = pos.shape[-1]
    g = int((pos.shape[1] - 1) ** 0.5)
    if g * g != pos.shape[1] - 1:
        raise ValueError(f"pos_embed has {pos.shape[1]} rows: not 1 + square")
    if g == grid:
        return pos
    tok = pos[:, 1:].reshape(1, g, g, c).permute(0, 3, 1, 2)
    tok = F.interpolate(tok, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], tok.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def eva_block(x, sd, p, heads, eps):
    """x += attn(norm1 x); x += mlp(norm2 x). qkv bias = cat(q_bias, 0, v_bias)."""
    h = layer_norm(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
    qb, vb = f32(sd[p + "attn.q_bias"]), f32(sd[p + "attn.v_bias"])
    qkv = F.linear(h, f32(sd[p + "attn.qkv.weight"]), torch.cat([qb, torch.zeros_like(qb), vb]))
    q, k, v = (split_heads(t, heads) for t in qkv.chunk(3, dim=-1))   # rows [q|k|v], then head
    x = x + linear(merge_heads(attention(q, k, v)), sd, p + "attn.proj")
    h = layer_norm(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
    return x + linear(F.gelu(linear(h, sd, p + "mlp.fc1")), sd, p + "mlp.fc2")


def eva_vit(pixels, sd, cfg: VitCfg, trace=None):
    """pixels (B,3,S,S) -> (B, 1+(S/p)^2, width); no final norm (EVA's norm is unused here)."""
    x = F.conv2d(pixels, f32(sd["patch_embed.proj.weight"]), f32(sd["patch_embed.proj.bias"]),
                 stride=cfg.patch)
    x = x.flatten(2).transpose(1, 2)
    cls = f32(sd["cls_token"]).expand(x.shape[0], -1, -1)
    pos = resize_pos_embed(sd["pos_embed"], cfg.img_size // cfg.patch)
    if trace is not None:
        trace["vit.pos_embed"] = pos
    x = torch.cat([cls, x], dim=1) + pos
    for i in range(cfg.depth):
        x = eva_block(x, sd, f"blocks.{i}.", cfg.heads, cfg.eps)
    return x


# ----------------------------------------------------------------------------------------------
# BLIP-2 Q-Former (Qformer.py: BertModel with query_embeds only; post-LN layers)

def bert_attention(x, ctx, sd, p, heads, eps):
    q = split_heads(linear(x, sd, p + "self.query"), heads)
    k = split_heads(linear(ctx, sd, p + "self.key"), heads)
    v = split_heads(linear(ctx, sd, p + "self.value"), heads)
    o = linear(merge_heads(attention(q, k, v)), sd, p + "output.dense")
    return layer_norm(o + x, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)


def qformer(image_embeds, sd, cfg: QfCfg):
    """image_embeds (B,N,vision_width) after ln_vision -> (B, queries, width)."""
    pre = "Qformer.bert."
    q = f32(sd["query_tokens"]).expand(image_embeds.shape[0], -1, -1)
    q = layer_norm(q, sd[pre + "embeddings.LayerNorm.weight"], sd[pre + "embeddings.LayerNorm.bias"],
                   cfg.eps)
    for i in range(cfg.layers):
        p = f"{pre}encoder.layer.{i}."
        q = bert_attention(q, q, sd, p + "attention.", cfg.heads, cfg.eps)
        if i % cfg.cross_freq == 0:
            q = bert_attention(q, image_embeds, sd, p + "crossattention.", cfg.heads, cfg.eps)
        h = F.gelu(linear(q, sd, p + "intermediate_query.dense"))
        h = linear(h, sd, p + "output_query.dense")
        q = layer_norm(h + q, sd[p + "output_query.LayerNorm.weight"],
                       sd[p + "output_query.LayerNorm.bias"], cfg.eps)
    return q


# ----------------------------------------------------------------------------------------------
# Phi-2 as modified by TinyGPT-V (its modeling_phi.py), written out by hand because transformers'
# PhiForCausalLM has no post-attention RMSNorm (see README). Fused per-head QKV layout:
# query_key_value row = head*3*D + {q:0,k:1,v:2}*D + d.

def split_to_fused(sd: dict, heads: int) -> dict:
    """HF q_proj/k_proj/v_proj -> query_key_value in the per-head interleaved layout."""
    out = dict(sd)
    for key in [k for k in sd if k.endswith("self_attn.q_proj.weight")]:
        p = key[: -len("q_proj.weight")]
        for kind in ("weight", "bias"):
            parts = [sd[f"{p}{n}_proj.{kind}"] for n in "qkv"]
            per = [t.reshape(heads, t.shape[0] // heads, *t.shape[1:]) for t in parts]
            fused = torch.stack(per, dim=1)                      # (H, 3, D, ...)
            out[f"{p}query_key_value.{kind}"] = fused.reshape(-1, *parts[0].shape[1:])
            for n in "qkv":
                del out[f"{p}{n}_proj.{kind}"]
    return out


def load_phi_folder(folder: pathlib.Path, heads: int) -> dict:
    sd = load_file(str(folder / "model.safetensors"))
    return split_to_fused(sd, heads)


def stage4_overlay(phi: dict, ckpt: dict, cfg: PhiCfg) -> dict:
    """The LM state TinyGPT-V has after from_pretrained + get_peft_model + load_state_dict(ckpt):
    base Phi weights, with the trained norm weights replacing the base ones, and norms absent from
    the base folder initialised as PyTorch does (LayerNorm 1/0, RMSNorm 1). LoRA kept separate."""
    sd = dict(phi)
    d = cfg.head_dim
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        sd.setdefault(p + "self_attn.q_layernorm.weight", torch.ones(d))
        sd.setdefault(p + "self_attn.q_layernorm.bias", torch.zeros(d))
        sd.setdefault(p + "self_attn.k_layernorm.weight", torch.ones(d))
        sd.setdefault(p + "self_attn.k_layernorm.bias", torch.zeros(d))
        sd.setdefault(p + "post_layernorm.weight", torch.ones(cfg.hidden))
    for key, val in ckpt.items():
        if not key.startswith(LORA_PREFIX):
            continue
        k = key[len(LORA_PREFIX):].replace(".default.", ".")   # peft ModuleDict adapter name
        if k not in sd and ".lora_" not in k:
            raise KeyError(f"stage-4 key {key} has no place in the Phi model")
        sd[k] = val
    return sd


def lora_linear(x, sd, p, scale):
    """Base Linear plus the unmerged LoRA path: y = W x + b + scale * B (A x)."""
    y = linear(x, sd, p)
    a, b = sd.get(p + ".lora_A.weight"), sd.get(p + ".lora_B.weight")
    if a is not None:
        y = y + scale * F.linear(F.linear(x, f32(a)), f32(b))
    return y


def rope_tables(positions: torch.Tensor, rot: int, theta: float):
    inv = 1.0 / (theta ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    freqs = positions.to(torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin, rot):
    """NeoX rotate_half on the first `rot` dims of each head: pairs (i, i + rot/2)."""
    xr, xp = x[..., :rot], x[..., rot:]
    x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return torch.cat([xr * cos + rotated * sin, xp], dim=-1)


def phi_layer(x, sd, p, cfg: PhiCfg, positions, trace=None):
    """One decoder layer on x (1,T,hidden) at the given absolute positions (no KV cache: the
    sequence attends to itself causally)."""
    scale = cfg.lora_alpha / cfg.lora_r
    h = layer_norm(x, sd[p + "input_layernorm.weight"], sd[p + "input_layernorm.bias"], cfg.eps)
    qkv = lora_linear(h, sd, p + "self_attn.query_key_value", scale)
    b, t, _ = qkv.shape
    qkv = qkv.view(b, t, cfg.heads, 3, cfg.head_dim)
    q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
    q = layer_norm(q, sd[p + "self_attn.q_layernorm.weight"], sd[p + "self_attn.q_layernorm.bias"], cfg.eps)
    k = layer_norm(k, sd[p + "self_attn.k_layernorm.weight"], sd[p + "self_attn.k_layernorm.bias"], cfg.eps)
    q, k, v = (z.transpose(1, 2) for z in (q, k, v))            # (B,H,T,D)
    cos, sin = rope_tables(positions, cfg.rotary, cfg.theta)
    q, k = apply_rope(q, cos, sin, cfg.rotary), apply_rope(k, cos, sin, cfg.rotary)
    o = lora_linear(merge_heads(attention(q, k, v, causal=True)), sd, p + "self_attn.dense", scale)
    o = rms_norm(o, sd[p + "post_layernorm.weight"], cfg.rms_eps)
    m = linear(gelu_new(linear(h, sd, p + "mlp.fc1")), sd, p + "mlp.fc2")
    if trace is not None:
        trace["attn_out"], trace["mlp_out"] = o, m
    return x + o + m


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def phi_forward(embeds, sd, cfg: PhiCfg, hidden_trace=None):
    """embeds (1,T,hidden) -> fp32 logits (1,T,vocab)."""
    x = embeds
    positions = torch.arange(x.shape[1])
    for i in range(cfg.layers):
        x = phi_layer(x, sd, f"model.layers.{i}.", cfg, positions)
        if hidden_trace is not None:
            hidden_trace.append(x)
    x = layer_norm(x, sd["model.final_layernorm.weight"], sd["model.final_layernorm.bias"], cfg.eps)
    return linear(x, sd, "lm_head")


# ----------------------------------------------------------------------------------------------
# the whole model

class TinyGPTV:
    """Loads the four original artefacts and runs image -> embeddings -> logits -> tokens."""

    def __init__(self, eva_pth, blip2_pth, stage4_pth, phi_folder, vit: VitCfg, qf: QfCfg,
                 lora_r=64, lora_alpha=16):
        self.vit_cfg, self.qf_cfg = vit, qf
        self.vit = torch.load(eva_pth, map_location="cpu", weights_only=True)
        blip2 = torch.load(blip2_pth, map_location="cpu", weights_only=True)["model"]
        self.blip2 = {k: v for k, v in blip2.items()
                      if k.startswith(("ln_vision.", "query_tokens", "Qformer.bert.embeddings.LayerNorm",
                                       "Qformer.bert.encoder."))}
        ckpt = torch.load(stage4_pth, map_location="cpu", weights_only=True)["model"]
        self.proj = {k: v for k, v in ckpt.items() if k.startswith("llama_proj")}
        self.phi_cfg = phi_cfg_from_folder(pathlib.Path(phi_folder), lora_r, lora_alpha)
        base = load_phi_folder(pathlib.Path(phi_folder), self.phi_cfg.heads)
        self.lm = stage4_overlay(base, ckpt, self.phi_cfg)

    @torch.no_grad()
    def encode_image(self, pixels, trace: dict | None = None):
        """pixels (1,3,S,S) -> (1, queries, hidden) image embeddings (encode_img)."""
        t = {} if trace is None else trace
        t["vit_out"] = eva_vit(pixels, self.vit, self.vit_cfg, trace=t)
        t["ln_vision"] = layer_norm(t["vit_out"], self.blip2["ln_vision.weight"],
                                    self.blip2["ln_vision.bias"], 1e-5)
        t["qformer_out"] = qformer(t["ln_vision"], self.blip2, self.qf_cfg)
        t["proj1"] = linear(t["qformer_out"], self.proj, "llama_proj")
        t["image_embeds"] = linear(t["proj1"], self.proj, "llama_proj2")
        return t["image_embeds"]

    def embed_ids(self, ids):
        return f32(self.lm["model.embed_tokens.weight"])[torch.as_tensor(ids, dtype=torch.long)][None]

    @torch.no_grad()
    def context_embeds(self, segments_ids, image_embeds):
        """get_context_emb: text pieces around <ImageHere>, image embeddings between."""
        parts = []
        for i, ids in enumerate(segments_ids):
            parts.append(self.embed_ids(ids))
            if i < len(segments_ids) - 1:
                parts.append(image_embeds)
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def logits(self, embeds, hidden_trace=None):
        return phi_forward(embeds, self.lm, self.phi_cfg, hidden_trace)

    @torch.no_grad()
    def greedy(self, embeds, n_new, stop_ids=()):
        """Greedy decoding by full recomputation (slow, exact). Returns the new ids (stops are kept)."""
        out = []
        x = embeds
        for _ in range(n_new):
            nxt = int(self.logits(x)[0, -1].argmax())
            out.append(nxt)
            if nxt in stop_ids:
                break
            x = torch.cat([x, self.embed_ids([nxt])], dim=1)
        return out


def chat_prompt(question: str) -> str:
    """Stage-4 template (demo_v2.py CONV_VISION, SeparatorStyle.SINGLE, sep ''):
    roles '<s>[INST] ' / ' [/INST]'; the image message is '<Img><ImageHere></Img>' and the
    question is joined to it with one space (Chat.ask)."""
    return "<s>[INST] " + "<Img>" + IMAGE_TAG + "</Img>" + " " + question + " [/INST]"


def split_prompt(prompt: str, tokenizer) -> list[list[int]]:
    """Each piece tokenized on its own; Phi-2's tokenizer adds no BOS even with
    add_special_tokens=True, so none is added here."""
    return [tokenizer.encode(seg, add_special_tokens=False).ids for seg in prompt.split(IMAGE_TAG)]
