#!/usr/bin/env bash
# tinyvlm convert + tinyvlm ask on the tiny TinyGPT-V in its original formats: the 32 greedy
# tokens equal the PyTorch reference's (tests/data/tinygptv/tiny.json); bad input is a clear
# error with exit 1, usage errors exit 2. $1 = the binary, $2 = the source tree.
set -u
bin=$1; src=$2
M=$src/tests/data/tinygptv/model
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
pass=0; fail=0
ok() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }

"$bin" convert --phi "$M/phi_fused" --eva "$M/eva_vit_g.pth" --blip2 "$M/blip2_pretrained_flant5xxl.pth" \
  --stage4 "$M/TinyGPT-V_for_Stage4.pth" --out "$work/b" --dtype f32 --vit-heads 2 --qformer-heads 2 \
  >"$work/conv.out" 2>&1
ok "convert exit 0" "[ $? -eq 0 ]"

q="[vqa] What colour is the cat?"
img=$src/tests/data/tinygptv/input.png
"$bin" ask --model "$work/b" --image "$img" --greedy --max-tokens 32 --json "$q" >"$work/ask.json" 2>"$work/ask.err"
ok "ask exit 0" "[ $? -eq 0 ]"
want=$(tr -d ' \n' < "$src/tests/data/tinygptv/tiny.json" | grep -o '"greedy_tokens":\[[0-9,]*\]' | head -1 | tr -dc '0-9,')
got=$(tr -d ' \n\t' < "$work/ask.json" | grep -o '"tokens":\[[0-9,]*\]' | head -1 | tr -dc '0-9,')
ok "32 greedy tokens = PyTorch reference" "[ -n '$want' ] && [ '$got' = '$want' ]"
[ "$got" = "$want" ] || { echo "  want $want"; echo "  got  $got"; }
ok "finish_reason length" "grep -q '\"finish_reason\":.*\"length\"' '$work/ask.json'"

"$bin" ask --model "$work/b" --image "$img" --max-tokens 5 --seed 3 "$q" >"$work/s.out" 2>"$work/s.err"
ok "sampled answer streams, exit 0" "[ $? -eq 0 ] && [ -s '$work/s.out' ]"

"$bin" ask --model "$work/b" --image /nonexistent.png "$q" >/dev/null 2>"$work/e1"
ok "missing image exit 1" "[ $? -eq 1 ] && grep -q 'nonexistent' '$work/e1'"
head -c 200 "$src/examples/sample.jpg" > "$work/bad.jpg"
"$bin" ask --model "$work/b" --image "$work/bad.jpg" "$q" >/dev/null 2>"$work/e2"
ok "corrupt image exit 1 with message" "[ $? -eq 1 ] && [ -s '$work/e2' ]"
"$bin" ask --model "$work/nothing" --image "$img" "$q" >/dev/null 2>"$work/e3"
ok "missing bundle exit 1" "[ $? -eq 1 ] && grep -q 'tinyvlm.json' '$work/e3'"
long=$(printf 'word %.0s' $(seq 1 3000))
"$bin" ask --model "$work/b" --image "$img" "$long" >/dev/null 2>"$work/e4"
ok "prompt over the context exit 1" "[ $? -eq 1 ] && grep -q 'context' '$work/e4'"
"$bin" ask --model "$work/b" --image "$img" >/dev/null 2>&1
ok "no question exit 2" "[ $? -eq 2 ]"
"$bin" ask --model "$work/b" --image "$img" --temperature -3 "$q" >/dev/null 2>"$work/e5"
ok "bad temperature exit 1" "[ $? -eq 1 ] && grep -q temperature '$work/e5'"
"$bin" ask --help >/dev/null 2>&1
ok "--help exit 0" "[ $? -eq 0 ]"

# --device: cpu gives the reference tokens; an unknown device is a usage error; cuda either
# runs (a GPU is present: the same tokens, f32 on the GPU is exact enough) or fails clearly
"$bin" ask --model "$work/b" --image "$img" --greedy --max-tokens 32 --json --device cpu "$q" >"$work/cpu.json" 2>/dev/null
got=$(tr -d ' \n\t' < "$work/cpu.json" | grep -o '"tokens":\[[0-9,]*\]' | head -1 | tr -dc '0-9,')
ok "--device cpu: 32 greedy tokens = PyTorch reference" "[ -n '$want' ] && [ '$got' = '$want' ]"
"$bin" ask --model "$work/b" --image "$img" --device tpu "$q" >/dev/null 2>&1
ok "--device tpu exit 2" "[ $? -eq 2 ]"
"$bin" ask --model "$work/b" --image "$img" --greedy --max-tokens 32 --json --device cuda "$q" >"$work/gpu.json" 2>"$work/e6"
rc=$?
got=$(tr -d ' \n\t' < "$work/gpu.json" | grep -o '"tokens":\[[0-9,]*\]' | head -1 | tr -dc '0-9,')
ok "--device cuda: reference tokens on a GPU, else exit 1 naming CUDA" \
  "{ [ $rc -eq 0 ] && [ '$got' = '$want' ]; } || { [ $rc -eq 1 ] && grep -qi cuda '$work/e6'; }"

echo "cli ask: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
