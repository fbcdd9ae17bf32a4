"""Goldens for common/safetensors: files written by the Python `safetensors` package (and
huggingface_hub's sharded save), plus the expected tensors written with plain file writes so the
C test can check the reader without trusting it.

Writes into out_dir:
  all_dtypes.safetensors   every dtype, scalars, empty tensors, odd shapes, rank 8, one metadata
                           key full of characters JSON must escape (one key, because the package
                           writes several keys in random HashMap order)
  all_dtypes.json/.bin     expected: {"metadata": {...}, "tensors": [{name, dtype, shape, offset,
                           nbytes}]} in the order the test adds them to the writer; .bin is the
                           raw little-endian bytes of each tensor concatenated
  nometa.safetensors       a few tensors, no metadata (writer byte-identity without metadata)
  empty.safetensors        no tensors at all
  multimeta.safetensors    several metadata keys (read back as a map, order not fixed)
  sharded/                 model-0000N-of-00003.safetensors + model.safetensors.index.json
  sharded.json/.bin        expected tensors of the sharded model, same format as above
  single/model.safetensors a directory holding one unsharded model
"""
import json
import pathlib
import shutil

import numpy as np
import torch
from safetensors.torch import save_file

DT = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32",
    torch.int64: "I64", torch.bool: "BOOL",
}


def raw_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()  # little-endian on every machine we run on


def rand(g, dtype, shape):
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)


def write_expected(out_dir: pathlib.Path, stem: str, tensors: dict, metadata: dict):
    entries, blob = [], bytearray()
    for name, t in tensors.items():
        b = raw_bytes(t)
        entries.append({"name": name, "dtype": DT[t.dtype], "shape": list(t.shape),
                        "offset": len(blob), "nbytes": len(b)})
        blob += b
    (out_dir / f"{stem}.bin").write_bytes(bytes(blob))
    (out_dir / f"{stem}.json").write_text(
        json.dumps({"metadata": metadata, "tensors": entries}, indent=1) + "\n")


def all_dtypes(g):
    t = {}
    shapes = [(3, 5), (7,), (2, 3, 4)]
    for i, dt in enumerate(DT):
        name = DT[dt].lower()
        t[f"{name}.matrix"] = rand(g, dt, shapes[i % 3])
        t[f"{name}.scalar"] = rand(g, dt, ())
        t[f"{name}.empty"] = rand(g, dt, (0, 4) if i % 2 else (2, 0, 3))
    # Special float values survive byte-exactly.
    t["f32.special"] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"),
                                     1e-45, 3.4028235e38], dtype=torch.float32)
    t["f16.special"] = torch.tensor([0.0, -0.0, float("inf"), 6e-8, 65504.0], dtype=torch.float16)
    t["rank8"] = rand(g, torch.float32, (1, 2, 1, 2, 1, 1, 3, 1))
    t["odd/name with spaces é☃"] = rand(g, torch.int16, (5, 1, 3))
    t["a.10.weight"] = rand(g, torch.float32, (2, 2))
    t["a.9.weight"] = rand(g, torch.float32, (2, 2))
    t["B"] = rand(g, torch.uint8, (13,))
    return t


def sort_metadata_keys(path: pathlib.Path):
    """The package writes metadata keys in Rust HashMap order, random per process; rewrite the
    header with sorted keys (same compact JSON, space padding) so reruns give the same bytes,
    and check the package still reads it."""
    from safetensors import safe_open
    b = path.read_bytes()
    n = int.from_bytes(b[:8], "little")
    header = json.loads(b[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b[8 + n:])
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == header["__metadata__"]


def main(out_dir: pathlib.Path):
    g = torch.Generator().manual_seed(20240611)
    meta = {"note": "tab\t quote\" backslash\\ ctrl\x01\x1f nl\n cr\r é ☃ / <>&\x7f"}
    t = all_dtypes(g)
    save_file(t, str(out_dir / "all_dtypes.safetensors"), metadata=meta)
    write_expected(out_dir, "all_dtypes", t, meta)

    small = {"w": rand(g, torch.float16, (4, 3)), "b": rand(g, torch.float32, (3,)),
             "idx": rand(g, torch.int64, (2,))}
    save_file(small, str(out_dir / "nometa.safetensors"))
    save_file({}, str(out_dir / "empty.safetensors"))
    save_file({"x": rand(g, torch.float32, (2,))}, str(out_dir / "multimeta.safetensors"),
              metadata={"format": "pt", "b": "2", "a": "1", "empty": ""})
    sort_metadata_keys(out_dir / "multimeta.safetensors")

    # Sharded: what transformers' save_pretrained writes (via huggingface_hub), small shards.
    from huggingface_hub import save_torch_state_dict
    sd = {}
    for layer in range(3):
        sd[f"model.layers.{layer}.attn.weight"] = rand(g, torch.float16, (16, 24))
        sd[f"model.layers.{layer}.attn.bias"] = rand(g, torch.float32, (24,))
        sd[f"model.layers.{layer}.mlp.weight"] = rand(g, torch.bfloat16, (24, 16))
    sd["model.embed.weight"] = rand(g, torch.float32, (10, 16))
    shard_dir = out_dir / "sharded"
    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    shard_dir.mkdir()
    save_torch_state_dict(sd, str(shard_dir), max_shard_size=2400, safe_serialization=True,
                          metadata={"format": "pt"})
    n_shards = len(list(shard_dir.glob("*.safetensors")))
    assert n_shards == 3, f"expected 3 shards, got {n_shards}"
    write_expected(out_dir, "sharded", sd, {})

    single = out_dir / "single"
    single.mkdir(exist_ok=True)
    save_file({"only": torch.arange(6, dtype=torch.int32).reshape(2, 3)},
              str(single / "model.safetensors"), metadata={"format": "pt"})
