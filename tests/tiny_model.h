/* tiny_model — the tiny TinyGPT-V in its original formats (tests/data/tinygptv/model, made by
 * tools/tinygptv/make_tiny.py) as conv_opts, shared by the convert, vision and phi tests. */
#ifndef TV_TEST_TINY_MODEL_H
#define TV_TEST_TINY_MODEL_H

#include "convert.h"

#define TINY_MODEL_DIR TV_TEST_DATA "/tinygptv/model"

/* Options converting the tiny checkpoints with the Phi folder phi_dir into out_dir at dtype. The
 * head counts are not derivable from shapes: ViT 88 = 2 x 44, Q-Former 48 = 2 x 24. */
static inline void tiny_conv_opts(conv_opts *o, const char *phi_dir, const char *out_dir,
                                  const char *dtype) {
    conv_opts_init(o);
    o->phi_dir = phi_dir;
    o->eva_path = TINY_MODEL_DIR "/eva_vit_g.pth";
    o->blip2_path = TINY_MODEL_DIR "/blip2_pretrained_flant5xxl.pth";
    o->stage4_path = TINY_MODEL_DIR "/TinyGPT-V_for_Stage4.pth";
    o->out_dir = out_dir;
    o->dtype = dtype;
    o->vit_heads = 2;
    o->qformer_heads = 2;
}

#endif
