#!/usr/bin/env bash
# WMT14 English-German in the style of "Attention Is All You Need" (Transformer base), for users
# with internet access and GPUs: training data through `datasets` (wmt14 de-en), test sets through
# sacreBLEU, the corpus prepared once (`mtkit prepare`, every CPU) and memory-mapped by every run,
# bf16, torchrun over every visible GPU, checkpoint averaging, sacreBLEU signature.
#
#   recipes/wmt14_en_de.sh                # run
#   DRY_RUN=1 recipes/wmt14_en_de.sh      # print the commands only
set -euo pipefail

SRC=${SRC:-en}
TGT=${TGT:-de}
RUN_DIR=${RUN_DIR:-runs/wmt14-$SRC-$TGT}
MTKIT=${MTKIT:-mtkit}
HUB_ID=${HUB_ID:-wmt14}
HUB_CONFIG=${HUB_CONFIG:-de-en}
PRESET=${PRESET:-base}
VOCAB=${VOCAB:-37000}               # joint vocabulary, as in the paper
INPUT_SENTENCES=${INPUT_SENTENCES:-4000000}
MAX_TOKENS=${MAX_TOKENS:-8192}      # per GPU; with UPDATE_FREQ and the GPU count: ~25k tokens per step on 8 GPUs
UPDATE_FREQ=${UPDATE_FREQ:-1}
LR=${LR:-0.0007}
WARMUP=${WARMUP:-4000}
MAX_STEPS=${MAX_STEPS:-100000}
VALID_EVERY=${VALID_EVERY:-5000}
SAVE_EVERY=${SAVE_EVERY:-2500}
AVERAGE_LAST=${AVERAGE_LAST:-5}
BEAM=${BEAM:-4}
LENGTH_PENALTY=${LENGTH_PENALTY:-0.6}
PRECISION=${PRECISION:-bf16}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)}
# shellcheck source=recipes/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DATA=$RUN_DIR/data
run mkdir -p "$DATA"
run "$MTKIT" export --hub "$HUB_ID" --config "$HUB_CONFIG" --split train --src-lang "$SRC" --tgt-lang "$TGT" -o "$DATA/train"
for test in wmt13 wmt14; do  # newstest2013 for validation, newstest2014 for the result
  run sh -c "sacrebleu -t $test -l $SRC-$TGT --echo src > '$DATA/$test.$SRC'"
  run sh -c "sacrebleu -t $test -l $SRC-$TGT --echo ref > '$DATA/$test.$TGT'"
done
run "$MTKIT" tokenizer train --src "$DATA/train.$SRC" --tgt "$DATA/train.$TGT" --vocab-size "$VOCAB" \
  --input-sentence-size "$INPUT_SENTENCES" -o "$RUN_DIR/tokenizer"

run "$MTKIT" prepare -o "$RUN_DIR/prepared" --tokenizer "$RUN_DIR/tokenizer" \
  --src "$DATA/train.$SRC" --tgt "$DATA/train.$TGT"

launcher=("$MTKIT")
if [[ "$NGPU" -gt 1 ]]; then
  launcher=(torchrun --standalone --nproc_per_node "$NGPU" -m mtkit)
fi
run "${launcher[@]}" train -o "$RUN_DIR/model" --data "$RUN_DIR/prepared" \
  --valid-src "$DATA/wmt13.$SRC" --valid-tgt "$DATA/wmt13.$TGT" \
  --preset "$PRESET" --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --lr "$LR" --warmup "$WARMUP" \
  --max-steps "$MAX_STEPS" --valid-every "$VALID_EVERY" --save-every "$SAVE_EVERY" --keep-last "$AVERAGE_LAST" \
  --precision "$PRECISION"

run "$MTKIT" average -m "$RUN_DIR/model" --last "$AVERAGE_LAST"
run "$MTKIT" translate -m "$RUN_DIR/model" --checkpoint averaged --beam "$BEAM" --length-penalty "$LENGTH_PENALTY" \
  --max-len-b 50 -i "$DATA/wmt14.$SRC" -o "$RUN_DIR/wmt14.hyp.$TGT"
run sh -c "'$MTKIT' score '$DATA/wmt14.$TGT' -i '$RUN_DIR/wmt14.hyp.$TGT' -m bleu chrf --sacrebleu -w 2 | tee '$RUN_DIR/wmt14.scores'"
run sh -c "sacrebleu '$DATA/wmt14.$TGT' -i '$RUN_DIR/wmt14.hyp.$TGT' -m bleu chrf -w 2 | tee '$RUN_DIR/wmt14.sacrebleu.json'"
