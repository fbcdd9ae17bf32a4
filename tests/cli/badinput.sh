#!/usr/bin/env bash
# tinyvlm ask on bad input: a corrupt or truncated bundle, a prompt longer than the context, an
# image the decoder refuses. Each must print a message and exit non-zero with a status below 128
# (a status >= 128 is a signal: a crash). $1 = the binary, $2 = the source tree.
set -u
bin=$1; src=$2
M=$src/tests/data/tinygptv/model
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pass=0; fail=0
img=$src/tests/data/tinygptv/input.png
q="[vqa] What colour is the cat?"

"$bin" convert --phi "$M/phi_fused" --eva "$M/eva_vit_g.pth" --blip2 "$M/blip2_pretrained_flant5xxl.pth" \
  --stage4 "$M/TinyGPT-V_for_Stage4.pth" --out "$work/good" --dtype f32 --vit-heads 2 --qformer-heads 2 \
  >"$work/conv.out" 2>&1 || { echo "FAIL convert of the tiny model"; cat "$work/conv.out"; exit 1; }
"$bin" ask --model "$work/good" --image "$img" --greedy --max-tokens 2 "$q" >/dev/null 2>&1 \
  || { echo "FAIL the good bundle does not answer"; exit 1; }

# refused NAME [ask arguments...]: ask must exit 1..127 and say something on stderr.
refused() {
    local name=$1; shift
    "$bin" ask "$@" >"$work/out" 2>"$work/err"
    local rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ -s "$work/err" ]; then
        pass=$((pass + 1))
        echo "ok   $name (exit $rc): $(grep -av '^[0-9T:.-]*Z ' "$work/err" | head -1 | cut -c1-150)"
    else
        fail=$((fail + 1))
        echo "FAIL $name: exit $rc (want 1..127 and a message)"
        head -5 "$work/err"
    fi
}

# A copy of the good bundle with one file replaced by what the command writes to stdout.
variant() {
    local name=$1 file=$2; shift 2
    rm -rf "$work/$name"; cp -r "$work/good" "$work/$name"
    "$@" > "$work/$name/$file"
}
ask_bundle() { refused "$1" --model "$work/$1" --image "$img" --greedy --max-tokens 2 "$q"; }
size() { wc -c < "$work/good/$1"; }

# ---- the manifest ----
variant garbage_json tinyvlm.json head -c 3000 /dev/urandom;              ask_bundle garbage_json
variant empty_json tinyvlm.json true;                                     ask_bundle empty_json
variant cut_json tinyvlm.json head -c $(( $(size tinyvlm.json) / 2 )) "$work/good/tinyvlm.json"
ask_bundle cut_json
variant other_json tinyvlm.json echo '{"format": "tinyvlm-bundle", "format_version": 1}'
ask_bundle other_json
# fields out of range, or not matching the tensors (the manifest is tab-indented JSON)
edit() { variant "$1" tinyvlm.json sed "$2" "$work/good/tinyvlm.json"; ask_bundle "$1"; }
edit vocab_huge 's/"vocab":[[:space:]]*[0-9]*/"vocab": 99999999999/'
edit vocab_off_by_one 's/"vocab":[[:space:]]*[0-9]*/"vocab": 449/'
edit context_huge 's/"max_context":[[:space:]]*[0-9]*/"max_context": 2000000000/'
edit layers_more 's/"layers":[[:space:]]*2/"layers": 3/'
edit image_size_other 's/"image_size":[[:space:]]*[0-9]*/"image_size": 98/'
edit heads_not_dividing 's/"heads":[[:space:]]*[0-9]*/"heads": 3/'
edit width_huge 's/"width":[[:space:]]*[0-9]*/"width": 1000000/'

# ---- truncated or corrupt safetensors, each side ----
for f in vision lm; do
    st=$f.safetensors; n=$(size $st)
    variant ${f}_empty $st true;                                          ask_bundle ${f}_empty
    variant ${f}_4bytes $st head -c 4 "$work/good/$st";                   ask_bundle ${f}_4bytes
    variant ${f}_cut_header $st head -c 40 "$work/good/$st";              ask_bundle ${f}_cut_header
    variant ${f}_half $st head -c $((n / 2)) "$work/good/$st";            ask_bundle ${f}_half
    variant ${f}_last_byte $st head -c $((n - 1)) "$work/good/$st";       ask_bundle ${f}_last_byte
    # a header length of 2^63 - 1
    variant ${f}_huge_header $st sh -c "printf '\377\377\377\377\377\377\377\177'; tail -c +9 '$work/good/$st'"
    ask_bundle ${f}_huge_header
    # the header's first bytes overwritten with garbage, length kept
    variant ${f}_bad_header $st sh -c "head -c 8 '$work/good/$st'; printf '{\"x\":[[[[[[[['; tail -c +23 '$work/good/$st'"
    ask_bundle ${f}_bad_header
done
rm -rf "$work/tok_missing"; cp -r "$work/good" "$work/tok_missing"; rm "$work/tok_missing/tokenizer.json"
ask_bundle tok_missing
variant tok_garbage tokenizer.json head -c 5000 /dev/urandom;             ask_bundle tok_garbage

# ---- prompts ----
long=$(printf 'word %.0s' $(seq 1 3000))
refused prompt_over_context --model "$work/good" --image "$img" "$long"
# more new tokens than the context holds is not an error: generation stops when it is full
"$bin" ask --model "$work/good" --image "$img" --max-tokens 100000000 "$q" >/dev/null 2>"$work/err"
rc=$?
if [ "$rc" -lt 128 ]; then pass=$((pass + 1)); echo "ok   max_tokens_over_context (exit $rc)"
else fail=$((fail + 1)); echo "FAIL max_tokens_over_context: exit $rc"; fi

# ---- images the decoder refuses ----
printf '\377\330\377\340garbage' > "$work/magic.jpg"
refused jpeg_magic_only --model "$work/good" --image "$work/magic.jpg" "$q"
head -c 300 "$src/examples/sample.jpg" > "$work/cut.jpg"
refused jpeg_truncated --model "$work/good" --image "$work/cut.jpg" "$q"
head -c 4000 /dev/urandom > "$work/noise.jpg"
refused random_bytes --model "$work/good" --image "$work/noise.jpg" "$q"
: > "$work/empty.png"
refused empty_image --model "$work/good" --image "$work/empty.png" "$q"
# a valid PNG header (CRCs right) claiming 100000 x 100000 RGB, with a tiny IDAT
printf '\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00\x27\x30\x9c\x9f\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\x60\xa0\x0c\x00\x00\x00\x40\x00\x01\xb7\x34\x7c\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82' > "$work/huge.png"
refused png_100k_square --model "$work/good" --image "$work/huge.png" "$q"
head -c 40 "$img" > "$work/cut.png"
refused png_truncated --model "$work/good" --image "$work/cut.png" "$q"
refused image_is_a_directory --model "$work/good" --image "$work" "$q"

echo "cli badinput: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
