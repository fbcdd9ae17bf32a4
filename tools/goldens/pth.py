"""Goldens for the .pth reader (common/pth.c): real torch.save archives, and the expected tensors
written independently of them (numpy .tobytes() of each tensor made contiguous), indexed by
expected.json. Also hostile and unsupported files the reader must refuse.

Files (tests/data/pth/):
  flat.pth       an nn.Module's state_dict saved as is (OrderedDict + _metadata), like eva_vit_g.pth
  nested.pth     {'model': {...every dtype, views, shared storages, a Parameter...}, 'epoch': 3,
                  'config': {...}, 'optimizer': {...}} like a training checkpoint
  proto4.pth     a small dict with pickle_protocol=4 (FRAME, MEMOIZE, STACK_GLOBAL, ...)
  zip64.pth      nested.pth's entries rewritten into a ZIP64 archive (every size and offset
                 through ZIP64 extra fields, ZIP64 end record) under a different prefix
  deflated.pth   flat.pth with data.pkl compressed (must be refused: not stored)
  evil_system.pth / evil_eval.pth  pickles calling posix.system / builtins.eval
  evil_module.pth  torch.save of a whole nn.Module (a torch global not on the whitelist)
  legacy.pth     torch.save(..., _use_new_zipfile_serialization=False)
  expected.json  {file: {"tensors": [{name, dtype, shape, offset, nbytes, contiguous}],
                  "ints": {...}, "floats": {...}, "strs": {...}}}; offsets into expected.bin
  expected.bin   the expected bytes, concatenated
"""
import json
import os
import pathlib
import pickle
import struct
import zipfile
import zlib

import numpy as np
import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
          torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bf16: its bits as int16
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def flatten(obj, prefix, out):
    """The names the C reader must produce: dict keys and list indices joined with '.'."""
    if isinstance(obj, torch.Tensor):
        out["tensors"].append((prefix, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(v, f"{prefix}.{i}" if prefix else str(i), out)
    elif isinstance(obj, bool):
        out["ints"][prefix] = int(obj)
    elif isinstance(obj, int):
        out["ints"][prefix] = obj
    elif isinstance(obj, float):
        out["floats"][prefix] = obj
    elif isinstance(obj, str):
        out["strs"][prefix] = obj


def make_objects():
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(6, 8, generator=g)
    shared = torch.arange(20, dtype=torch.float32)
    model = {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(4, 3, generator=g).half(),
        "bf16": torch.randn(2, 7, generator=g).bfloat16(),
        "f64": torch.randn(5, generator=g).double(),
        "i64": torch.randint(-2**40, 2**40, (3, 2), generator=g),
        "i32": torch.randint(-2**31, 2**31 - 1, (7,), generator=g, dtype=torch.int32),
        "i16": torch.randint(-2**15, 2**15 - 1, (2, 2), generator=g, dtype=torch.int16),
        "i8": torch.randint(-128, 127, (9,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (2, 3, 4), generator=g, dtype=torch.uint8),
        "bool": torch.randn(10, generator=g) > 0,
        "transposed": base.t(),                       # strides (1, 8): gathered
        "sliced": base[2:5, 3:],                      # offset 19, non-contiguous rows
        "rows": base[1:4],                            # offset 8, contiguous: zero-copy
        "expanded": torch.randn(3, 1, generator=g).expand(3, 4),  # stride 0
        "shared_all": shared,
        "shared_mid": shared[5:9],                    # same storage, offset 5
        "shared_2d": shared.view(4, 5)[:, 1:3],       # same storage, strided
        "param": torch.nn.Parameter(torch.randn(4, generator=g)),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "large": torch.randn(128, 256, generator=g),
        "deep": {"nest": {"leaf": torch.arange(6, dtype=torch.int64).reshape(2, 3)}},
    }
    nested = {
        "model": model,
        "epoch": 3,
        "config": {"lr": 0.001, "name": "tinygpt-v", "layers": [1, 2, 3], "amp": True,
                   "none": None, "big": 2**40, "neg": -7},
        "optimizer": {"state": {0: {"step": 10, "exp_avg": torch.ones(4)}},
                      "param_groups": [{"lr": 0.5, "params": [0]}]},
    }
    torch.manual_seed(99)
    net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.LayerNorm(4),
                              torch.nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        net[1].weight.mul_(torch.linspace(0.5, 1.5, 4))
    flat = net.state_dict()
    small = {"w": torch.randn(3, 3, generator=g).half(), "n": 5,
             "v": torch.arange(4, dtype=torch.int32)[::2]}
    return flat, nested, small, net


def expectations(obj, blob):
    out = {"tensors": [], "ints": {}, "floats": {}, "strs": {}}
    flatten(obj, "", out)
    rows = []
    for name, t in out["tensors"]:
        b = tensor_bytes(t)
        rows.append({"name": name, "dtype": DTYPES[t.dtype], "shape": list(t.shape),
                     "offset": len(blob), "nbytes": len(b),
                     "contiguous": bool(t.is_contiguous())})
        blob += b
    return {"tensors": rows, "ints": out["ints"], "floats": out["floats"], "strs": out["strs"]}


def entries_of(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def write_zip64(path, entries, prefix):
    """A stored ZIP64 archive: every size/offset saturated and given in ZIP64 extra fields."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        name = (prefix + name[name.index("/"):]).encode()
        crc = zlib.crc32(data)
        off = len(out)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0, crc,
                           0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra)) + name + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(name), len(cextra), 0, 0, 0, 0,
                               0xFFFFFFFF) + name + cextra
    cd_off = len(out)
    out += central
    z64 = len(out)
    n = len(entries)
    out += struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, n, n, len(central), cd_off)
    out += struct.pack("<IIQI", 0x07064b50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(bytes(out))


def write_zip(path, entries, deflate_pkl=False):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries:
            method = zipfile.ZIP_DEFLATED if deflate_pkl and name.endswith("data.pkl") \
                else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(name), data, compress_type=method)


class _Evil:
    """Pickles as a call to fn(arg): what an attacker would put in a checkpoint. Never loaded."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def write_evil(path, template, payload):
    entries = [(n, payload if n.endswith("/data.pkl") else d) for n, d in entries_of(template)]
    write_zip(path, entries)


def main(out_dir: pathlib.Path):
    torch.manual_seed(0)
    flat, nested, small, net = make_objects()
    blob = bytearray()
    expected = {}
    for fname, obj, kw in (("flat.pth", flat, {}), ("nested.pth", nested, {}),
                           ("proto4.pth", small, {"pickle_protocol": 4})):
        torch.save(obj, out_dir / fname, **kw)
        expected[fname] = expectations(obj, blob)
    write_zip64(out_dir / "zip64.pth", entries_of(out_dir / "nested.pth"), "my_ckpt")
    expected["zip64.pth"] = expected["nested.pth"]
    write_zip(out_dir / "deflated.pth", entries_of(out_dir / "flat.pth"), deflate_pkl=True)
    write_evil(out_dir / "evil_system.pth", out_dir / "flat.pth",
               pickle.dumps(_Evil(os.system, "echo pwned"), protocol=2))
    write_evil(out_dir / "evil_eval.pth", out_dir / "flat.pth",
               pickle.dumps(_Evil(eval, "1+1"), protocol=2))
    torch.save(net, out_dir / "evil_module.pth")
    # The legacy format keys storages by memory address, so it differs on every run: written
    # once and kept, so reruns leave the committed file alone.
    if not (out_dir / "legacy.pth").exists():
        torch.save({"a": torch.ones(3)}, out_dir / "legacy.pth",
                   _use_new_zipfile_serialization=False)
    (out_dir / "expected.bin").write_bytes(bytes(blob))
    (out_dir / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
