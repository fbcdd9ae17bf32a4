#!/usr/bin/env bash
# The committed demo bundle (models/demo) answers questions about the shipped sample images
# correctly with greedy decoding: the answers are the scenes' true ones (the scenes are drawn by
# tools/demo/examples.py; see tools/demo/README.md), not a record of earlier output. Then 40
# held-out questions of tests/data/demo get the PyTorch reference's greedy answers.
# $1 = the binary, $2 = the source tree.
set -u
bin=$1; src=$2
M=$src/models/demo
E=$src/examples
pass=0; fail=0
export TINYVLM_LOG=warn

# expect IMAGE QUESTION ANSWER: tinyvlm ask --greedy prints ANSWER (surrounding blanks aside)
expect() {
  local got
  got=$("$bin" ask --model "$M" --image "$E/$1" --greedy --max-tokens 64 --threads 2 "$2" 2>/dev/null)
  local rc=$?
  got=$(printf '%s' "$got" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
  if [ $rc -eq 0 ] && [ "$got" = "$3" ]; then pass=$((pass + 1))
  else fail=$((fail + 1)); echo "FAIL $1: $2"; echo "  want '$3'"; echo "  got  '$got' (exit $rc)"; fi
}

[ -f "$M/tinyvlm.json" ] || { echo "demo: no bundle at $M"; exit 1; }

# sample.png (320x240): a big red circle at the top left, a big blue square at the top right
expect sample.png "[vqa] What colour is the circle?" "red"
expect sample.png "[vqa] How many shapes are there?" "two"
expect sample.png "[caption] Describe this image." \
  "a big red circle at the top left and a big blue square at the top right on a gray background"
expect sample.png "[refer] where is the blue square?" "{<52><28><72><48>}"
# sample.jpg (JPEG, 320x240): a yellow star, a green triangle and a purple cross on black
expect sample.jpg "[vqa] How many shapes are there?" "three"
expect sample.jpg "[vqa] What shape is the purple object?" "cross"
expect sample.jpg "[vqa] Is there a green triangle in the image?" "yes"
# four-shapes.png (224x224, noisy background): four shapes, two of them circles
expect four-shapes.png "[vqa] How many circles are there?" "two"
expect four-shapes.png "[vqa] Where is the red triangle?" "bottom right"
expect four-shapes.png "[identify] what is this {<78><2><97><21>}" "cyan star"
# noisy.jpg (224x224 JPEG): a big blue cross and a small yellow square
expect noisy.jpg "[vqa] Is the yellow square on the left or on the right?" "right"
expect noisy.jpg "[vqa] Is there a blue square in the image?" "no"

# the first 40 held-out questions of tests/data/demo (written by tools/demo/eval.py): tinyvlm's
# greedy answers equal the PyTorch reference's on the original-format files
D=$src/tests/data/demo
n=0
while IFS= read -r line; do
  f=$(printf '%s' "$line" | sed -n 's/.*"file": "\([^"]*\)".*/\1/p')
  q=$(printf '%s' "$line" | sed -n 's/.*"question": "\([^"]*\)".*/\1/p')
  a=$(printf '%s' "$line" | sed -n 's/.*"pytorch": "\([^"]*\)".*/\1/p')
  [ -n "$f" ] && [ -n "$q" ] && [ -n "$a" ] || continue
  E=$D expect "$f" "$q" "$a"
  n=$((n + 1)); [ $n -ge 40 ] && break
done < "$D/items.json"
[ $n -eq 40 ] || { fail=$((fail + 1)); echo "FAIL read 40 items from $D/items.json (got $n)"; }

echo "cli demo: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
