/* convert — `tinyvlm convert`: reads TinyGPT-V's original checkpoints once and writes a bundle
 * (docs/bundle.md): tinyvlm.json, vision.safetensors, lm.safetensors, tokenizer.json.
 *
 * Inputs: eva_vit_g.pth (EVA ViT), blip2_pretrained_flant5xxl.pth (ln_vision + Q-Former),
 * TinyGPT-V_for_Stage4.pth (LoRA, trained norm weights, llama_proj/llama_proj2) and a Phi-2 HF
 * folder (config.json + model.safetensors or a sharded index; fused query_key_value or split
 * q/k/v_proj, detected). The .pth files go through common/pth's restricted reader.
 *
 * What it does to the weights: pos_embed resized to the run grid (torch bicubic, A = -0.75,
 * align_corners=False, CLS row kept); LoRA merged in f32 into the fused qkv and dense
 * (W += alpha/r · B·A, in the fused layout), then qkv reordered to [q heads | k heads | v heads];
 * trained norm weights from the stage-4 file override the Phi folder's; matrices stored in the
 * chosen dtype (q8/q4 per kernels/quant.h), small vectors F32. Every tensor is produced row by
 * row inside st_writer's fill callback, so at most a row (plus one LoRA A matrix) is held in
 * memory next to the mapped inputs.
 *
 * Every missing or wrongly shaped input tensor is collected and reported in one error; unused
 * tensors that look like model weights are listed in a warning (optimizer state and the parts
 * of BLIP-2 TinyGPT-V never uses are ignored quietly). */
#ifndef TV_CONVERT_H
#define TV_CONVERT_H

typedef struct {
    const char *phi_dir;        /* HF Phi-2 folder (or a .safetensors / index.json file) */
    const char *eva_path;       /* eva_vit_g.pth */
    const char *blip2_path;     /* blip2_pretrained_flant5xxl.pth */
    const char *stage4_path;    /* TinyGPT-V_for_Stage4.pth */
    const char *tokenizer_path; /* NULL: <phi_dir>/tokenizer.json */
    const char *out_dir;        /* created if missing; existing bundle files are replaced */
    const char *name;           /* manifest "name"; NULL: "tinygpt-v" */
    const char *dtype;          /* "f32" | "f16" | "bf16" | "q8" | "q4"; NULL: "f16" */
    int image_size;             /* 0: the stage-4 checkpoint's config image_size, else 448 */
    int lora_r;                 /* 0: the checkpoint's config lora_r, else the LoRA A shape */
    double lora_alpha;          /* 0: the checkpoint's config lora_alpha, else 16 */
    int vit_heads;              /* 0: width / 88 (EVA ViT-g's head size) */
    int qformer_heads;          /* 0: width / 64 (BERT-base's head size) */
    int max_context;            /* 0: config.json max_position_embeddings, else 2048 */
} conv_opts;

/* Fills o with the defaults above (all paths NULL). */
void conv_opts_init(conv_opts *o);

/* Converts. Returns 0, or a negative TV_E* code with err_msg() set: TV_EINVAL (bad option),
 * TV_ENOTFOUND (missing tensors: the message lists them all), TV_EFORMAT (wrong shapes, bad
 * config.json, malformed checkpoint), TV_EIO (cannot read or write). On failure the output
 * directory may hold some of the new files but never a tinyvlm.json describing them. */
int conv_run(const conv_opts *o);

/* The subcommand: `tinyvlm convert [options]`; argv[0] is "convert". Returns the exit code:
 * 0 success, 1 failure (message on stderr), 2 usage error. */
int cli_convert(int argc, char **argv);

#endif
