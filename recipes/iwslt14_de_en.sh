#!/usr/bin/env bash
# The IWSLT German-English TED-talks setting with the `small` preset (3+3 layers, d_model 256).
# Data comes through `datasets`; HUB_ID/HUB_CONFIG pick the release (default: the IWSLT 2017
# de-en release on the hub, whose train set is the IWSLT14 one extended; its dev2010 and
# tst2010 splits serve as validation and test).
#
#   recipes/iwslt14_de_en.sh                # run
#   DRY_RUN=1 recipes/iwslt14_de_en.sh      # print the commands only
set -euo pipefail

SRC=${SRC:-de}
TGT=${TGT:-en}
RUN_DIR=${RUN_DIR:-runs/iwslt-$SRC-$TGT}
MTKIT=${MTKIT:-mtkit}
HUB_ID=${HUB_ID:-iwslt2017}
HUB_CONFIG=${HUB_CONFIG:-iwslt2017-de-en}
PRESET=${PRESET:-small}
VOCAB=${VOCAB:-10000}
MAX_TOKENS=${MAX_TOKENS:-4096}
LR=${LR:-0.0005}
WARMUP=${WARMUP:-4000}
MAX_STEPS=${MAX_STEPS:-40000}
VALID_EVERY=${VALID_EVERY:-2000}
SAVE_EVERY=${SAVE_EVERY:-1000}
AVERAGE_LAST=${AVERAGE_LAST:-10}
BEAM=${BEAM:-5}
PRECISION=${PRECISION:-auto}
# shellcheck source=recipes/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DATA=$RUN_DIR/data
run mkdir -p "$DATA"
for split in train validation test; do
  run "$MTKIT" export --hub "$HUB_ID" --config "$HUB_CONFIG" --split "$split" --src-lang "$SRC" --tgt-lang "$TGT" \
    -o "$DATA/$split"
done
run "$MTKIT" tokenizer train --src "$DATA/train.$SRC" --tgt "$DATA/train.$TGT" --vocab-size "$VOCAB" -o "$RUN_DIR/tokenizer"
run "$MTKIT" train -o "$RUN_DIR/model" --tokenizer "$RUN_DIR/tokenizer" \
  --src "$DATA/train.$SRC" --tgt "$DATA/train.$TGT" --valid-src "$DATA/validation.$SRC" --valid-tgt "$DATA/validation.$TGT" \
  --preset "$PRESET" --max-tokens "$MAX_TOKENS" --lr "$LR" --warmup "$WARMUP" --max-steps "$MAX_STEPS" \
  --valid-every "$VALID_EVERY" --save-every "$SAVE_EVERY" --keep-last "$AVERAGE_LAST" --precision "$PRECISION" \
  --set model.dropout=0.3
run "$MTKIT" average -m "$RUN_DIR/model" --last "$AVERAGE_LAST"
run "$MTKIT" translate -m "$RUN_DIR/model" --checkpoint averaged --beam "$BEAM" -i "$DATA/test.$SRC" -o "$RUN_DIR/test.hyp.$TGT"
run sh -c "'$MTKIT' score '$DATA/test.$TGT' -i '$RUN_DIR/test.hyp.$TGT' -m bleu chrf --sacrebleu -w 2 | tee '$RUN_DIR/test.scores'"
