"""Goldens for common/image.c: encoded test images in every JPEG/PNG flavour we claim to decode,
Pillow's decoded RGB pixels for each, Pillow's bicubic resizes, one normalised float tensor, and a
few malformed files. Everything is seeded: a rerun writes the same bytes.

Writes tests/data/image/cases.txt, one case per line (parsed by tests/unit/test_image.c):
    decode <input> <w> <h> <expected>    expected = raw RGB file (.rgb), RGB8 PNG (.png) or
                                         sha256:<hex> of the raw RGB bytes (large images)
    resize <input> <W> <H> <expected.png>  Pillow: open().convert('RGB').resize((W,H), BICUBIC)
    norm <input> <S> <expected.f32>       resize to SxS, ToTensor + Normalize (CLIP mean/std),
                                          float32 little-endian CHW
    bad <input> <ERRNAME>                 must be refused with that TV_E* code

Expected pixels come from Pillow only (the reference), never from our C code."""
import ctypes
import hashlib
import io
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


# ---- synthetic content -------------------------------------------------------------------------
def synth(w, h, seed, noise=6.0):
    """Gradients + shapes + text-like edges + gaussian noise, as an RGB PIL image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = xx * 255.0 / max(w - 1, 1)
    g = yy * 255.0 / max(h - 1, 1)
    b = 128 + 100 * np.sin(xx / 7.0 + seed) * np.cos(yy / 11.0)
    arr = np.stack([r, g, b], axis=-1)
    arr += rng.normal(0, noise, arr.shape)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(max(1, (w * h) // 4000)):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(1, w // 3 + 2)), y0 + int(rng.integers(1, h // 3 + 2))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            d.rectangle([x0, y0, x1, y1], fill=col)
        elif kind == 1:
            d.ellipse([x0, y0, x1, y1], outline=col, width=2)
        else:
            d.line([x0, y0, x1, y1], fill=col, width=1)
    for i in range(max(1, h // 40)):
        d.text((int(rng.integers(0, max(w - 20, 1))), 5 + 37 * i), "tinyvlm Ag|#%", fill=(0, 0, 0))
    return im


def pil_rgb(buf):
    return Image.open(io.BytesIO(buf)).convert("RGB")


# ---- a minimal PNG writer, for what Pillow cannot write (2/4-bit gray, 16-bit colour, Adam7) ---
def _chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _pack_row(samples, depth):
    """samples: 1-D uint array of one row (all channels interleaved) -> packed bytes."""
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per = 8 // depth
    out = bytearray((len(samples) + per - 1) // per)
    for i, v in enumerate(samples):
        out[i // per] |= int(v) << (8 - depth * (i % per + 1))
    return bytes(out)


def _filter_rows(rows, bpp, ftype):
    """Applies PNG filter ftype (0..4, or -1 = cycle through all) to packed rows."""
    out, prev = bytearray(), bytes(len(rows[0])) if rows else b""
    for i, row in enumerate(rows):
        f = (i % 5) if ftype < 0 else ftype
        enc = bytearray(len(row))
        for x in range(len(row)):
            a = row[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            enc[x] = (row[x] - p) & 255
        out += bytes([f]) + enc
        prev = row
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def write_png(pixels, ctype, depth, plte=None, trns=None, interlace=False, ftype=-1):
    """pixels: (h, w, channels) integer array of raw samples."""
    h, w = pixels.shape[:2]
    ch = pixels.shape[2]
    bpp = max(1, ch * depth // 8)
    data = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for (x0, y0, dx, dy) in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        rows = [_pack_row(sub[y].reshape(-1), depth) for y in range(sub.shape[0])]
        data += _filter_rows(rows, bpp, ftype)
    png = b"\x89PNG\r\n\x1a\n"
    png += _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0))
    if plte is not None:
        png += _chunk(b"PLTE", bytes(np.asarray(plte, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        png += _chunk(b"tRNS", trns)
    png += _chunk(b"IDAT", zlib.compress(data, 9)) + _chunk(b"IEND", b"")
    return png


# ---- YCCK JPEG through libturbojpeg (Pillow cannot write YCCK) --------------------------------
def ycck_jpeg(cmyk, quality=92):
    tj = ctypes.CDLL("libturbojpeg.so.0")
    tj.tjInitCompress.restype = ctypes.c_void_p
    h = tj.tjInitCompress()
    h_, w_ = cmyk.shape[:2]
    src = np.ascontiguousarray(cmyk, dtype=np.uint8)
    out = ctypes.POINTER(ctypes.c_ubyte)()
    size = ctypes.c_ulong(0)
    TJPF_CMYK, TJSAMP_420 = 11, 2
    rc = tj.tjCompress2(ctypes.c_void_p(h), src.ctypes.data_as(ctypes.c_void_p), w_, w_ * 4, h_,
                        TJPF_CMYK, ctypes.byref(out), ctypes.byref(size), TJSAMP_420, quality, 0)
    assert rc == 0, "tjCompress2 failed"
    data = ctypes.string_at(out, size.value)
    tj.tjFree(out)
    tj.tjDestroy(ctypes.c_void_p(h))
    assert b"Adobe" in data[:200]
    return data


# ---- writers of expected values ----------------------------------------------------------------
class Out:
    def __init__(self, out_dir):
        self.dir = out_dir
        self.lines = []

    def put(self, name, data):
        (self.dir / name).write_bytes(data)

    def expect_rgb(self, name, rgb_im, store="auto"):
        """Stores Pillow's RGB pixels; returns the manifest token."""
        raw = rgb_im.tobytes()
        if store == "sha" or (store == "auto" and len(raw) > 1_500_000):
            return "sha256:" + hashlib.sha256(raw).hexdigest()
        if store == "png" or (store == "auto" and len(raw) > 40_000):
            b = io.BytesIO()
            rgb_im.save(b, "PNG", optimize=True)
            self.put(name + ".png", b.getvalue())
            return name + ".png"
        self.put(name + ".rgb", raw)
        return name + ".rgb"

    def decode_case(self, name, data, store="auto"):
        self.put(name, data)
        im = pil_rgb(data)
        exp = self.expect_rgb("exp_" + name.replace(".", "_"), im, store)
        self.lines.append(f"decode {name} {im.width} {im.height} {exp}")
        return im

    def resize_case(self, name, im, w, h):
        r = im.resize((w, h), Image.BICUBIC)
        exp = self.expect_rgb(f"rs_{name.replace('.', '_')}_{w}x{h}", r, "png")
        self.lines.append(f"resize {name} {w} {h} {exp}")
        return r


def make_jpegs(o):
    base = synth(97, 61, 1)
    for sub, tag in [(0, "444"), (1, "422"), (2, "420")]:
        b = io.BytesIO()
        base.save(b, "JPEG", quality=90, subsampling=sub)
        o.decode_case(f"j_{tag}.jpg", b.getvalue())
    b = io.BytesIO()
    base.save(b, "JPEG", quality=85, progressive=True, subsampling=2)
    o.decode_case("j_prog.jpg", b.getvalue())
    b = io.BytesIO()
    base.save(b, "JPEG", quality=85, progressive=True, subsampling=0)
    o.decode_case("j_prog444.jpg", b.getvalue())
    b = io.BytesIO()
    base.convert("L").save(b, "JPEG", quality=90)
    o.decode_case("j_gray.jpg", b.getvalue())
    cmyk = base.convert("CMYK")
    b = io.BytesIO()
    cmyk.save(b, "JPEG", quality=90)                    # Adobe marker, inverted CMYK
    o.decode_case("j_cmyk.jpg", b.getvalue())
    arr = np.asarray(cmyk).copy()
    arr[..., 3] = np.linspace(0, 200, arr.shape[1], dtype=np.uint8)[None, :]  # non-zero K
    o.decode_case("j_ycck.jpg", ycck_jpeg(arr))
    for (w, h) in [(1, 1), (3, 500), (500, 3)]:
        b = io.BytesIO()
        synth(w, h, 7 + w).save(b, "JPEG", quality=90)
        o.decode_case(f"j_{w}x{h}.jpg", b.getvalue())
    b = io.BytesIO()
    synth(641, 479, 3).save(b, "JPEG", quality=92)
    mid = o.decode_case("j_641x479.jpg", b.getvalue(), store="sha")
    b = io.BytesIO()
    synth(360, 640, 8).save(b, "JPEG", quality=90)   # portrait: Pillow 13 resizes V first
    o.decode_case("j_360x640.jpg", b.getvalue(), store="sha")
    b = io.BytesIO()
    synth(1600, 1200, 4, noise=2.0).save(b, "JPEG", quality=95)
    big = o.decode_case("j_1600x1200.jpg", b.getvalue(), store="sha")
    return mid, big


def make_pngs(o):
    rng = np.random.default_rng(11)
    base = synth(67, 45, 5)

    def pil_png(name, im, **kw):
        b = io.BytesIO()
        im.save(b, "PNG", **kw)
        return o.decode_case(name, b.getvalue())

    pil_png("p_rgb8.png", base)
    rgba = base.copy()
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (45, 67), dtype=np.uint8)))
    pil_png("p_rgba8.png", rgba)
    pil_png("p_gray8.png", base.convert("L"))
    la = base.convert("LA")
    la.putalpha(Image.fromarray(rng.integers(0, 256, (45, 67), dtype=np.uint8)))
    pil_png("p_ga8.png", la)
    pal = base.quantize(200)
    pil_png("p_pal8.png", pal)
    palt = pal.copy()
    palt.info["transparency"] = 3
    pil_png("p_pal8_trns.png", palt, transparency=3)
    pil_png("p_bw1.png", base.convert("1"))
    pil_png("p_pal2.png", base.quantize(4), bits=2)
    pil_png("p_pal4.png", base.quantize(16), bits=4)
    g16 = rng.integers(0, 65536, (23, 37)).astype(np.uint16)
    g16[::3] = rng.integers(0, 256, (len(g16[::3]), 37))          # rows with high byte 0
    pil_png("p_gray16_pil.png", Image.fromarray(g16))

    def raw_png(name, pixels, ctype, depth, **kw):
        o.decode_case(name, write_png(np.asarray(pixels), ctype, depth, **kw))

    w, h = 37, 23
    raw_png("p_gray1.png", rng.integers(0, 2, (h, w, 1)), 0, 1)
    raw_png("p_gray2.png", rng.integers(0, 4, (h, w, 1)), 0, 2)
    raw_png("p_gray4.png", rng.integers(0, 16, (h, w, 1)), 0, 4)
    raw_png("p_gray16.png", g16[..., None], 0, 16)
    raw_png("p_rgb16.png", rng.integers(0, 65536, (h, w, 3)), 2, 16)
    raw_png("p_rgba16.png", rng.integers(0, 65536, (h, w, 4)), 6, 16)
    raw_png("p_ga16.png", rng.integers(0, 65536, (h, w, 2)), 4, 16)
    raw_png("p_gray8_trns.png", rng.integers(0, 256, (h, w, 1)), 0, 8, trns=b"\x00\x07")
    raw_png("p_rgb8_trns.png", rng.integers(0, 256, (h, w, 3)), 2, 8, trns=b"\x00\x01\x00\x02\x00\x03")
    plte = rng.integers(0, 256, (5, 3))
    raw_png("p_pal4_short.png", rng.integers(0, 5, (h, w, 1)), 3, 4, plte=plte, trns=b"\x10\x80")
    plte16 = rng.integers(0, 256, (16, 3))
    raw_png("p_pal1.png", rng.integers(0, 2, (h, w, 1)), 3, 1, plte=plte16[:2])
    # Adam7
    raw_png("p_rgb8_adam7.png", np.asarray(base)[:h, :w], 2, 8, interlace=True)
    raw_png("p_pal4_adam7.png", rng.integers(0, 16, (h, w, 1)), 3, 4, plte=plte16, interlace=True)
    raw_png("p_gray16_adam7.png", g16[..., None], 0, 16, interlace=True)
    raw_png("p_ga8_adam7_3x5.png", rng.integers(0, 256, (5, 3, 2)), 4, 8, interlace=True)
    raw_png("p_rgba8_1x1_adam7.png", rng.integers(0, 256, (1, 1, 4)), 6, 8, interlace=True)
    raw_png("p_gray2_adam7.png", rng.integers(0, 4, (h, w, 1)), 0, 2, interlace=True)
    raw_png("p_gray1_adam7.png", rng.integers(0, 2, (h, w, 1)), 0, 1, interlace=True)
    raw_png("p_gray4_adam7.png", rng.integers(0, 16, (h, w, 1)), 0, 4, interlace=True)
    raw_png("p_pal1_adam7.png", rng.integers(0, 2, (h, w, 1)), 3, 1, plte=plte16[:2],
            interlace=True)
    raw_png("p_pal2_adam7_7x9.png", rng.integers(0, 4, (9, 7, 1)), 3, 2, plte=plte16[:4],
            interlace=True)
    return base


def make_bad(o, jpeg_ok, png_ok):
    def bad(name, data, code):
        o.put(name, data)
        o.lines.append(f"bad {name} {code}")

    bad("bad_empty.bin", b"", "EFORMAT")
    bad("bad_trunc.jpg", jpeg_ok[: len(jpeg_ok) // 2], "EFORMAT")
    bad("bad_header_only.jpg", jpeg_ok[:20], "EFORMAT")
    # truncated in the middle of IDAT
    idat = png_ok.index(b"IDAT")
    bad("bad_trunc.png", png_ok[: idat + 40], "EFORMAT")
    crc = bytearray(png_ok)
    ln = struct.unpack(">I", png_ok[idat - 4:idat])[0]
    crc[idat + 4 + ln] ^= 0xFF                      # first byte of IDAT's CRC
    bad("bad_idat_crc.png", bytes(crc), "EFORMAT")
    # decompression bomb: a valid header claiming 100000 x 100000, tiny IDAT
    bomb = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0,
                                                                0, 0))
    bomb += _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b"")
    bad("bad_bomb.png", bomb, "ELIMIT")
    # a JPEG whose SOF claims 60000 x 60000 (refused from the header)
    sof = jpeg_ok.index(b"\xff\xc0")
    jb = bytearray(jpeg_ok)
    jb[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    bad("bad_bomb.jpg", bytes(jb), "ELIMIT")
    g = io.BytesIO()
    synth(16, 16, 9).save(g, "GIF")
    bad("bad.gif", g.getvalue(), "EUNSUPPORTED")
    bad("bad_garbage.bin", bytes(np.random.default_rng(5).integers(0, 256, 300, dtype=np.uint8)),
        "EUNSUPPORTED")
    bad("bad_png_sig_only.png", b"\x89PNG\r\n\x1a\n", "EFORMAT")


def main(out_dir: pathlib.Path):
    for p in out_dir.glob("*"):
        p.unlink()
    o = Out(out_dir)
    mid, big = make_jpegs(o)
    make_pngs(o)
    small = pil_rgb((out_dir / "j_420.jpg").read_bytes())
    # resizes: downscale both axes, mixed, upscale, extreme aspect
    o.resize_case("j_1600x1200.jpg", big, 224, 224)
    o.resize_case("j_1600x1200.jpg", big, 448, 448)
    o.resize_case("j_641x479.jpg", mid, 224, 224)
    o.resize_case("j_641x479.jpg", mid, 448, 448)
    tall = pil_rgb((out_dir / "j_360x640.jpg").read_bytes())
    o.resize_case("j_360x640.jpg", tall, 224, 224)
    o.resize_case("j_360x640.jpg", tall, 448, 448)
    o.resize_case("j_360x640.jpg", tall, 360, 100)
    o.resize_case("j_420.jpg", small, 448, 448)
    o.resize_case("j_420.jpg", small, 224, 224)
    o.resize_case("j_3x500.jpg", pil_rgb((out_dir / "j_3x500.jpg").read_bytes()), 224, 224)
    o.resize_case("j_1x1.jpg", pil_rgb((out_dir / "j_1x1.jpg").read_bytes()), 5, 3)
    o.resize_case("p_rgb8.png", pil_rgb((out_dir / "p_rgb8.png").read_bytes()), 67, 20)
    o.resize_case("p_rgb8.png", pil_rgb((out_dir / "p_rgb8.png").read_bytes()), 30, 45)
    # normalised tensor (torchvision ToTensor + Normalize in float32)
    s = 64
    r = np.asarray(mid.resize((s, s), Image.BICUBIC)).astype(np.float32)
    t = ((r / np.float32(255.0) - MEAN) / STD).transpose(2, 0, 1).astype("<f4")
    o.put("norm_641x479_64.f32", t.tobytes())
    o.lines.append(f"norm j_641x479.jpg {s} norm_641x479_64.f32")
    make_bad(o, (out_dir / "j_641x479.jpg").read_bytes(), (out_dir / "p_rgb8.png").read_bytes())
    (out_dir / "cases.txt").write_text("\n".join(o.lines) + "\n")
