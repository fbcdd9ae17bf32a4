/* tinyvlm inspect FILE... — shows what tinyvlm reads from each file: an image (format, size,
 * SHA-256 cache key, preprocessed tensor), a safetensors file or sharded model folder, a
 * torch.save checkpoint, a tokenizer.json (and the ids of --text), or a bundle folder. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "hash.h"
#include "image.h"
#include "manifest.h"
#include "mapfile.h"
#include "pth.h"
#include "safetensors.h"
#include "tokenizer.h"

#define INSPECT_MAX_LIST 40 /* tensors listed before "... and N more" */

typedef struct {
    int size;          /* preprocessing resolution */
    const char *text;  /* text to tokenize with a tokenizer file */
    int all;           /* list every tensor */
} inspect_opts;

static const float inspect_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float inspect_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

static void inspect_usage(FILE *f) {
    fprintf(f, "usage: tinyvlm inspect [--size N] [--text STR] [--all] FILE...\n\n"
               "FILE may be a JPEG/PNG image, a .safetensors file, a folder with a sharded\n"
               "safetensors model or a tinyvlm bundle, a torch.save .pth checkpoint, or a\n"
               "tokenizer.json.\n\n"
               "  --size N    image preprocessing size (default 448, as TinyGPT-V stage 4)\n"
               "  --text STR  with a tokenizer: print the ids of STR and decode them back\n"
               "  --all       list every tensor (default: the first %d)\n", INSPECT_MAX_LIST);
}

static void print_tensor(const tensor_view *t) {
    char shape[160];
    printf("  %-60s %-5s %s\n", t->name ? t->name : "?", dtype_name(t->dtype),
           tensor_shape_str(t, shape, sizeof shape));
}

static int inspect_image(const char *path, const mapfile *mf, const inspect_opts *o) {
    img_format fmt;
    int w, h;
    int rc = img_probe(mf->data, mf->size, NULL, &fmt, &w, &h);
    if (rc) return rc;
    char hex[HASH_SHA256_HEX_LEN + 1];
    if ((rc = hash_sha256_hex(mf->data, mf->size, hex))) return rc;
    printf("%s: %s image, %d x %d, %zu bytes\n  sha256 %s (the embedding cache key)\n", path,
           img_format_name(fmt), w, h, mf->size, hex);
    size_t plane = (size_t)o->size * o->size;
    float *x = tv_xmalloc(3 * plane * sizeof(float));
    rc = img_preprocess(mf->data, mf->size, NULL, o->size, inspect_mean, inspect_std, x);
    if (!rc) {
        printf("  preprocessed to [3, %d, %d] (bicubic, CLIP mean/std):\n", o->size, o->size);
        for (int c = 0; c < 3; c++) {
            double sum = 0, lo = INFINITY, hi = -INFINITY;
            for (size_t i = 0; i < plane; i++) {
                float v = x[c * plane + i];
                sum += v, lo = fmin(lo, v), hi = fmax(hi, v);
            }
            printf("    channel %c: mean %+.4f  min %+.4f  max %+.4f\n", "RGB"[c], sum / plane, lo, hi);
        }
    }
    free(x);
    return rc;
}

static void list_tensors(size_t n, const tensor_view *(*at)(const void *, size_t), const void *src,
                         const inspect_opts *o) {
    size_t shown = o->all || n <= INSPECT_MAX_LIST ? n : INSPECT_MAX_LIST;
    for (size_t i = 0; i < shown; i++) print_tensor(at(src, i));
    if (shown < n) printf("  ... and %zu more (--all lists them)\n", n - shown);
}

static const tensor_view *st_at(const void *m, size_t i) { return st_model_tensor_at(m, i); }
static const tensor_view *pth_at(const void *p, size_t i) { return pth_get(p, i); }

static int inspect_safetensors(const char *path, const inspect_opts *o) {
    st_model *m = NULL;
    int rc = st_model_open(path, &m);
    if (rc) return rc;
    size_t n = st_model_count(m);
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += st_model_tensor_at(m, i)->nbytes;
    printf("%s: safetensors, %zu file(s), %zu tensors, %.1f MB of data\n", path,
           st_model_nfiles(m), n, bytes / 1e6);
    list_tensors(n, st_at, m, o);
    st_model_free(m);
    return TV_OK;
}

static int inspect_pth(const char *path, const inspect_opts *o) {
    pth_file *p = NULL;
    int rc = pth_open(path, &p);
    if (rc) return rc;
    size_t n = pth_count(p);
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += pth_get(p, i)->nbytes;
    printf("%s: torch.save checkpoint (archive '%s'), %zu tensors, %.1f MB of data\n", path,
           pth_prefix(p), n, bytes / 1e6);
    list_tensors(n, pth_at, p, o);
    int64_t epoch;
    if (pth_get_int(p, "epoch", &epoch) == 0) printf("  epoch %lld\n", (long long)epoch);
    pth_free(p);
    return TV_OK;
}

static int inspect_tokenizer(const char *path, const inspect_opts *o) {
    tokenizer *t = NULL;
    int rc = tok_load(path, &t);
    if (rc) return rc;
    printf("%s: byte-level BPE tokenizer, %d tokens\n", path, tok_vocab_size(t));
    if (o->text) {
        int32_t *ids = NULL;
        size_t n = 0;
        rc = tok_encode(t, o->text, strlen(o->text), &ids, &n);
        if (!rc) {
            printf("  %zu ids:", n);
            for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
            char *back = NULL;
            size_t len = 0;
            rc = tok_decode(t, ids, n, 0, &back, &len);
            if (!rc) printf("\n  decoded: \"%.*s\"\n", (int)len, back);
            free(back);
        }
        free(ids);
    }
    tok_free(t);
    return rc;
}

static int inspect_bundle(const char *path) {
    manifest *m = NULL;
    int rc = manifest_load(path, &m);
    if (rc) return rc;
    printf("%s: tinyvlm bundle '%s' (%s, %s), fingerprint %.16s...\n"
           "  vision: %d px, ViT %d x %d wide, %d heads; Q-Former %d queries; %d image tokens of %d\n"
           "  lm: %s, %d layers, %d wide, %d heads x %d, vocab %d, context %d\n",
           path, m->name, m->architecture, m->dtype, m->fingerprint, m->vision.image_size,
           m->vision.layers, m->vision.width, m->vision.heads, m->qformer.queries,
           manifest_image_tokens(m), manifest_embed_dim(m), m->lm.arch, m->lm.layers, m->lm.width,
           m->lm.heads, m->lm.head_dim, m->lm.vocab, m->lm.max_context);
    manifest_free(m);
    return TV_OK;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int inspect_one(const char *path, const inspect_opts *o) {
    struct stat st;
    if (stat(path, &st) != 0) return err_set(TV_EIO, "%s: no such file or folder", path);
    if (S_ISDIR(st.st_mode)) {
        char probe[4096];
        snprintf(probe, sizeof probe, "%s/tinyvlm.json", path);
        return access(probe, R_OK) == 0 ? inspect_bundle(path) : inspect_safetensors(path, o);
    }
    mapfile *mf = NULL;
    int rc = mf_open(path, &mf);
    if (rc) return rc;
    if (img_detect(mf->data, mf->size) != IMG_FMT_UNKNOWN)
        rc = inspect_image(path, mf, o);
    else if (mf->size >= 4 && memcmp(mf->data, "PK\x03\x04", 4) == 0)
        rc = inspect_pth(path, o);
    else if (ends_with(path, ".safetensors") || ends_with(path, ".index.json"))
        rc = inspect_safetensors(path, o);
    else if (ends_with(path, ".json"))
        rc = inspect_tokenizer(path, o);
    else
        rc = err_set(TV_EUNSUPPORTED, "%s: not an image, safetensors, .pth or tokenizer.json file", path);
    mf_free(mf);
    return rc;
}

int cli_inspect(int argc, char **argv) {
    inspect_opts o = {.size = 448};
    const char **files = tv_xcalloc((size_t)argc, sizeof *files);
    int nfiles = 0, failed = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            inspect_usage(stdout);
            free(files);
            return 0;
        } else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            o.size = atoi(argv[++i]);
            if (o.size < 1 || o.size > 4096) {
                fprintf(stderr, "tinyvlm inspect: --size must be in 1..4096\n");
                free(files);
                return 2;
            }
        } else if (!strcmp(argv[i], "--text") && i + 1 < argc) {
            o.text = argv[++i];
        } else if (!strcmp(argv[i], "--all")) {
            o.all = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "tinyvlm inspect: unknown option %s\n\n", argv[i]);
            inspect_usage(stderr);
            free(files);
            return 2;
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (!nfiles) {
        inspect_usage(stderr);
        free(files);
        return 2;
    }
    for (int i = 0; i < nfiles; i++) {
        err_clear();
        if (inspect_one(files[i], &o) != 0) {
            fprintf(stderr, "tinyvlm inspect: %s\n", err_msg());
            failed = 1;
        }
    }
    free(files);
    return failed;
}
