#!/usr/bin/env bash
# Sequence-level knowledge distillation (Kim & Rush, 2016) into deep-encoder, shallow-decoder
# students (Kasai et al., 2021) on Multi30k en-de: a teacher (or an ensemble of TEACHERS teachers)
# translates the training source with beam search; each student preset is trained on the
# teacher's translations and, for comparison, on the original references, with the same budget;
# every model is averaged, scored on val and test_2016_flickr, and timed on the CPU
# (recipes/benchmarks/bench_decode.py). Writes $RUN_DIR/results.md. Run again after an
# interruption, it keeps every finished model and translation and trains a model it had begun
# again from the start (each model gets the whole budget).
#
#   recipes/distill.sh              # run (CPU or GPU)
#   DRY_RUN=1 recipes/distill.sh    # print the commands only
set -euo pipefail

RUN_DIR=${RUN_DIR:-runs/distill}
MTKIT=${MTKIT:-mtkit}
PYTHON=${PYTHON:-python3}
SHARED_DIR=${SHARED_DIR:-../shared/data/multi30k}
TEACHER_PRESET=${TEACHER_PRESET:-multi30k}
TEACHERS=${TEACHERS:-1}             # 2: two teachers (seeds 1 and 2) translate as an ensemble
TEACHER=${TEACHER:-}                # a model you have (DIR or DIR:CHECKPOINT) as the teacher, instead of training one
STUDENTS=${STUDENTS:-"student student-tiny"}
VOCAB=${VOCAB:-8000}
MAX_TIME=${MAX_TIME:-600}           # seconds of training per model, the same for every model
MAX_TOKENS=${MAX_TOKENS:-4096}
LR=${LR:-0.003}
WARMUP=${WARMUP:-150}
DROPOUT=${DROPOUT:-0.1}
BEAM=${BEAM:-5}
NPROC=${NPROC:-1}                   # processes that translate the training source (torchrun), e.g. one per GPU
TIME_MODELS=${TIME_MODELS:-1}       # 0: skip the speed measurements
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
made_before "$RUN_DIR/tok/tokenizer.json" || run "$MTKIT" tokenizer train --src "$DATA/train.en" --tgt "$DATA/train.de" --vocab-size "$VOCAB" -o "$RUN_DIR/tok"

train() {  # train MODEL PRESET TGT_FILE [option ...]
  local model=$1 preset=$2 tgt=$3
  shift 3
  local again=()
  made_before "$RUN_DIR/$model/checkpoints/averaged.pt" && return 0
  [[ -d "$RUN_DIR/$model" ]] && again=(--overwrite)  # begun by an interrupted run: trained again, whole
  run "$MTKIT" train -o "$RUN_DIR/$model" "${again[@]}" --tokenizer "$RUN_DIR/tok" --src "$DATA/train.en" --tgt "$tgt" \
    --valid-src "$DATA/val.en" --valid-tgt "$DATA/val.de" --preset "$preset" --max-tokens "$MAX_TOKENS" \
    --lr "$LR" --warmup "$WARMUP" --dropout "$DROPOUT" --max-steps 0 --max-time "$MAX_TIME" \
    --set train.schedule=linear --valid-every 300 --save-every 100 --keep-last 5 --precision "$PRECISION" --quiet "$@"
  local saved
  saved=$(ls "$RUN_DIR/$model/checkpoints"/step_*.pt 2>/dev/null | wc -l || true)
  [[ "$DRY_RUN" == 1 ]] && saved=5
  run "$MTKIT" average -m "$RUN_DIR/$model" --last "$(( saved < 5 ? saved : 5 ))"
}

where() {  # where MODEL -> DIR:CHECKPOINT of a model of this recipe (the given teacher, or one trained here)
  if [[ "$1" == teacher && -n "$TEACHER" ]]; then
    [[ "$TEACHER" == *:* ]] && echo "$TEACHER" || echo "$TEACHER:averaged"
  else
    echo "$RUN_DIR/$1:averaged"
  fi
}

# the teacher(s), and the distilled training set: the teacher's beam search on the training source
names=(teacher)
if [[ -z "$TEACHER" ]]; then
  names=()
  for k in $(seq 1 "$TEACHERS"); do
    train "teacher$k" "$TEACHER_PRESET" "$DATA/train.de" --seed "$k"
    names+=("teacher$k")
  done
fi
teachers=()
for name in "${names[@]}"; do teachers+=(-m "$(where "$name")"); done
translator=("$MTKIT")
(( NPROC > 1 )) && translator=(torchrun --standalone --nproc_per_node "$NPROC" -m mtkit)
made_before "$DATA/train.distilled.de" ||
  run "${translator[@]}" translate "${teachers[@]}" --beam "$BEAM" -i "$DATA/train.en" -o "$DATA/train.distilled.de" --quiet

# the students: on the teacher's translations, and on the references with the same budget
for preset in $STUDENTS; do
  train "$preset-distilled" "$preset" "$DATA/train.distilled.de"
  train "$preset-references" "$preset" "$DATA/train.de"
done

score() {  # score NAME SPLIT [MODEL ...] -> "BLEU chrF" (cased); several models: an ensemble
  local name=$1 split=$2 hyp=$RUN_DIR/$1.$2.de
  shift 2
  local models=() model
  for model in "${@:-$name}"; do models+=(-m "$(where "$model")"); done
  run "$MTKIT" translate "${models[@]}" --beam "$BEAM" -i "$DATA/$split.en" -o "$hyp" --quiet
  run sh -c "'$MTKIT' score '$DATA/$split.de' -i '$hyp' -m bleu chrf -w 2 > '$hyp.scores'"
}
models=("${names[@]}")
for preset in $STUDENTS; do models+=("$preset-distilled" "$preset-references"); done
for model in "${models[@]}"; do
  for split in val test_2016_flickr; do score "$model" "$split"; done
done
if (( ${#names[@]} > 1 )); then
  for split in val test_2016_flickr; do score teachers "$split" "${names[@]}"; done
fi
if [[ "$TIME_MODELS" == 1 ]]; then
  for model in "${models[@]}"; do
    spec=$(where "$model")
    made_before "$RUN_DIR/$model.speed" || run sh -c "OMP_NUM_THREADS=2 '$PYTHON' recipes/benchmarks/bench_decode.py \
      '${spec%:*}' --checkpoint '${spec##*:}' --quick > '$RUN_DIR/$model.speed'"
  done
fi

if [[ "$DRY_RUN" != 1 ]]; then
  {
    echo "| model | parameters | val BLEU | val chrF2 | test BLEU | test chrF2 | CPU sentences/s: fp32 beam 5 / greedy; int8 beam 5 / greedy; CTranslate2 int8 beam 5 / greedy |"
    echo "|---|---|---|---|---|---|---|"
    for model in "${models[@]}"; do
      spec=$(where "$model")
      params=$("$PYTHON" -c "import sys; from mtkit.model.checkpoint import load_for_inference as load; m = load(*sys.argv[1:])[0]; print(f'{sum(p.numel() for p in m.parameters()):,}')" \
        "${spec%:*}" "${spec##*:}")
      row="| $model | $params"
      for split in val test_2016_flickr; do
        row+=" | $(awk 'NR == 1 {print $3}' "$RUN_DIR/$model.$split.de.scores") | $(awk 'NR == 2 {print $3}' "$RUN_DIR/$model.$split.de.scores")"
      done
      speed="(not timed)"
      if [[ -f "$RUN_DIR/$model.speed" ]]; then  # the medians of bench_decode's in-process rows
        speed=$(grep -E "^  (mtkit fp32|mtkit int8|ctranslate2 int8) {2,}(beam|greedy)" "$RUN_DIR/$model.speed" \
          | sed -E 's/.*\/ ([0-9.,]+) \/ .*/\1/' | paste -sd' ' | awk '{printf "%s / %s; %s / %s; %s / %s", $1, $2, $3, $4, $5, $6}')
      fi
      echo "$row | $speed |"
    done
    echo
    echo "Cased BLEU and chrF2, beam $BEAM, the average of the last 5 checkpoints; $MAX_TIME s of training per model,"
    [[ -n "$TEACHER" ]] && echo "the teacher: $TEACHER (not trained here);"
    echo "precision $PRECISION; students trained on the teacher's beam-$BEAM translations (distilled) or the references."
    echo "Speeds: bench_decode.py --quick, in process, 2 threads, medians. $(date -u +%F), $(nproc) CPUs,"
    echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs). Recipe wall time $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s."
  } > "$RUN_DIR/results.md"
  cat "$RUN_DIR/results.md"
fi
