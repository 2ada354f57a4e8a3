#!/usr/bin/env bash
# Back-translation on Multi30k en-de (Sennrich et al. 2016; Edunov et al. 2018: sampling;
# Caswell et al. 2019: tags). The training set is split into a parallel part and a "monolingual"
# German part (the remaining pairs' German side only; their English is never used). A de->en model
# trained on the parallel part back-translates the German (beam, and sampling); then en->de models
# with the same preset and wall-time budget train on:
#   (a) the parallel part alone     (b) + beam back-translation     (c) + sampled back-translation
#   (d) + the better of (b, c) tagged <BT>                          (e) all 29,000 real pairs (the bound)
#   (f) (d) fine-tuned on the parallel part (--init-from d)         (d+f) (d) and (f) as an ensemble
# Each setting's tokenizer learns from what that setting may see. Writes $RUN_DIR/results.md.
# Run again after an interruption, it keeps every finished model and translation and trains a
# model it had begun again from the start (each model gets the whole budget).
#
#   recipes/backtranslation.sh              # run (CPU or GPU)
#   DRY_RUN=1 recipes/backtranslation.sh    # print the commands only
set -euo pipefail

RUN_DIR=${RUN_DIR:-runs/backtranslation}
MTKIT=${MTKIT:-mtkit}
SHARED_DIR=${SHARED_DIR:-../shared/data/multi30k}
PARALLEL=${PARALLEL:-10000}         # pairs kept parallel; the rest give German only
PRESET=${PRESET:-multi30k}
VOCAB=${VOCAB:-8000}
MAX_TIME=${MAX_TIME:-600}           # seconds of training per model, the same for every model
MAX_TOKENS=${MAX_TOKENS:-4096}
LR=${LR:-0.003}
WARMUP=${WARMUP:-150}
FT_LR=${FT_LR:-0.001}               # fine-tuning (f): a third of the learning rate, the same budget
DROPOUT=${DROPOUT:-0.1}
BEAM=${BEAM:-5}
SAMPLING=${SAMPLING:-"--sampling --seed 1"}  # how the sampled back-translation is drawn (add --topk 10, ...)
TAG=${TAG:-"<BT>"}
if [[ -z "${PRECISION:-}" ]]; then
  PRECISION=auto
  if grep -q -E 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then PRECISION=bf16; fi
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DATA=$RUN_DIR/data
run mkdir -p "$DATA"
for split in train val test_2016_flickr; do
  for lang in en de; do
    run sh -c "gzip -dc '$SHARED_DIR/$split.$lang.gz' > '$DATA/$split.$lang'"
  done
done
for lang in en de; do
  run sh -c "head -n $PARALLEL '$DATA/train.$lang' > '$DATA/parallel.$lang'"
done
run sh -c "tail -n +$((PARALLEL + 1)) '$DATA/train.de' > '$DATA/mono.de'"   # the German side only

train() {  # train MODEL TOKENIZER SRC TGT (data: --src/--tgt files, or --config FILE; then any option)
  local model=$1 tok=$2 src=$3 tgt=$4
  shift 4
  local shape=(--preset "$PRESET") again=()
  [[ " $* " == *" --init-from "* ]] && shape=()  # a fine-tuned model keeps its parent's shape
  made_before "$RUN_DIR/$model/checkpoints/averaged.pt" && return 0
  [[ -d "$RUN_DIR/$model" ]] && again=(--overwrite)  # begun by an interrupted run: trained again, whole
  run "$MTKIT" train -o "$RUN_DIR/$model" "${again[@]}" --tokenizer "$RUN_DIR/$tok" --lr "$LR" "$@" \
    --valid-src "$DATA/val.$src" --valid-tgt "$DATA/val.$tgt" "${shape[@]}" --max-tokens "$MAX_TOKENS" \
    --warmup "$WARMUP" --dropout "$DROPOUT" --max-steps 0 --max-time "$MAX_TIME" \
    --set train.schedule=linear --valid-every 300 --save-every 100 --keep-last 5 --precision "$PRECISION" --quiet
  local saved
  saved=$(ls "$RUN_DIR/$model/checkpoints"/step_*.pt 2>/dev/null | wc -l || true)
  [[ "$DRY_RUN" == 1 ]] && saved=5
  run "$MTKIT" average -m "$RUN_DIR/$model" --last "$(( saved < 5 ? saved : 5 ))"
}

corpora() {  # corpora CONFIG BT_FILE [TAG]: the parallel part plus a back-translation
  local config=$1 bt=$2 tag=${3:-}
  run sh -c "printf '[[data.corpora]]\nname = \"parallel\"\nsrc = \"%s\"\ntgt = \"%s\"\n\n[[data.corpora]]\nname = \"bt\"\nsrc = \"%s\"\ntgt = \"%s\"\n%s' \
    '$DATA/parallel.en' '$DATA/parallel.de' '$bt' '$DATA/mono.de' '${tag:+tag = \"$tag\"}' > '$config'"
}

# the back-translation model, de->en, on the parallel part
made_before "$RUN_DIR/tok-parallel/tokenizer.json" || run "$MTKIT" tokenizer train --src "$DATA/parallel.en" --tgt "$DATA/parallel.de" --vocab-size "$VOCAB" -o "$RUN_DIR/tok-parallel"
train de-en tok-parallel de en --src "$DATA/parallel.de" --tgt "$DATA/parallel.en"
made_before "$DATA/bt-beam.en" ||
  run "$MTKIT" translate -m "$RUN_DIR/de-en" --checkpoint averaged --beam "$BEAM" -i "$DATA/mono.de" -o "$DATA/bt-beam.en"
# shellcheck disable=SC2086
made_before "$DATA/bt-sampling.en" ||
  run "$MTKIT" translate -m "$RUN_DIR/de-en" --checkpoint averaged $SAMPLING -i "$DATA/mono.de" -o "$DATA/bt-sampling.en"

# the en->de settings
made_before "$RUN_DIR/tok-mono/tokenizer.json" || run "$MTKIT" tokenizer train --src "$DATA/parallel.en" \
  --tgt "$DATA/parallel.de" --tgt "$DATA/mono.de" --vocab-size "$VOCAB" --tag "$TAG" -o "$RUN_DIR/tok-mono"
made_before "$RUN_DIR/tok-all/tokenizer.json" || run "$MTKIT" tokenizer train --src "$DATA/train.en" --tgt "$DATA/train.de" --vocab-size "$VOCAB" -o "$RUN_DIR/tok-all"
train a-parallel tok-parallel en de --src "$DATA/parallel.en" --tgt "$DATA/parallel.de"
corpora "$RUN_DIR/b.toml" "$DATA/bt-beam.en"
train b-beam tok-mono en de --config "$RUN_DIR/b.toml"
corpora "$RUN_DIR/c.toml" "$DATA/bt-sampling.en"
train c-sampling tok-mono en de --config "$RUN_DIR/c.toml"

score() {  # score NAME SPLIT [MODEL ...] -> "BLEU chrF" (cased); several models: an ensemble (default: NAME)
  local name=$1 split=$2 hyp=$RUN_DIR/$1.$2.de
  shift 2
  local models=() model
  for model in "${@:-$name}"; do models+=(-m "$RUN_DIR/$model:averaged"); done
  run "$MTKIT" translate "${models[@]}" --beam "$BEAM" -i "$DATA/$split.en" -o "$hyp" --quiet
  run sh -c "'$MTKIT' score '$DATA/$split.de' -i '$hyp' -m bleu chrf -w 2 > '$hyp.scores'"
}
for model in a-parallel b-beam c-sampling; do
  for split in val test_2016_flickr; do score "$model" "$split"; done
done
better=bt-beam.en
if [[ "$DRY_RUN" != 1 ]]; then
  b=$(awk 'NR == 1 {print $3}' "$RUN_DIR/b-beam.val.de.scores")
  c=$(awk 'NR == 1 {print $3}' "$RUN_DIR/c-sampling.val.de.scores")
  awk -v b="$b" -v c="$c" 'BEGIN { exit !(c > b) }' && better=bt-sampling.en
fi
corpora "$RUN_DIR/d.toml" "$DATA/$better" "$TAG"
train d-tagged tok-mono en de --config "$RUN_DIR/d.toml"
train e-all tok-all en de --src "$DATA/train.en" --tgt "$DATA/train.de"
# (f): the tagged back-translation model, fine-tuned on the genuine pairs alone; (d+f): both, ensembled
train f-finetuned tok-mono en de --src "$DATA/parallel.en" --tgt "$DATA/parallel.de" \
  --init-from "$RUN_DIR/d-tagged" --init-checkpoint averaged --lr "$FT_LR"
for model in d-tagged e-all f-finetuned; do
  for split in val test_2016_flickr; do score "$model" "$split"; done
done
for split in val test_2016_flickr; do score d+f-ensemble "$split" d-tagged f-finetuned; done

if [[ "$DRY_RUN" != 1 ]]; then
  {
    echo "| en->de trained on | pairs | val BLEU | val chrF2 | test_2016_flickr BLEU | test chrF2 |"
    echo "|---|---|---|---|---|---|"
    for model in a-parallel b-beam c-sampling d-tagged e-all f-finetuned d+f-ensemble; do
      pairs=$(python3 -c "import json,sys; print(sum(c['report']['kept'] for c in json.load(open(sys.argv[1]))['data']['corpora']))" \
        "$RUN_DIR/${model%-ensemble}/manifest.json" 2>/dev/null || echo "(d) + (f)")
      row="| $model | $pairs"
      for split in val test_2016_flickr; do
        row+=" | $(awk 'NR == 1 {print $3}' "$RUN_DIR/$model.$split.de.scores") | $(awk 'NR == 2 {print $3}' "$RUN_DIR/$model.$split.de.scores")"
      done
      echo "$row |"
    done
    echo
    echo "Cased BLEU and chrF2, beam $BEAM, the average of the last 5 checkpoints; $PRESET preset, $MAX_TIME s of"
    echo "training per model, precision $PRECISION; recipe wall time $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s;"
    echo "(d) tags the better of (b, c) on val: $better; (f) is (d) fine-tuned on the parallel part at lr $FT_LR;"
    echo "(d+f) decodes with both. $(date -u +%F), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
  } > "$RUN_DIR/results.md"
  cat "$RUN_DIR/results.md"
fi
