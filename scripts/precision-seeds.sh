#!/bin/sh
# bf16 vs fp32 on the same split (stratified 80/20, split seed 42), training seeds 1-3, for the encoder
# model (100 epochs) and the audio CNN (20 epochs); run from the repository root after `npm run setup`.
# Appends one line per run to runs/precision-seeds.times (docs/RESULTS.md has the table).
D=${RAVDESS_DIR:-../shared/data/ravdess}
mkdir -p runs
for model in encoder audio; do
  for seed in 1 2 3; do
    for amp in bf16 off; do
      out=runs/prec-$model-$amp-s$seed
      epochs=100; [ $model = audio ] && epochs=20
      s=$(date +%s)
      node dist/cli.js train --data $D --out $out --models $model --epochs $epochs --amp $amp --train "{\"$model\":{\"seed\":$seed}}" --quiet > $out.out 2>&1
      echo "$model $amp seed $seed $(( $(date +%s) - s )) s: $(grep "^$model " $out.out)" >> runs/precision-seeds.times
    done
  done
done
echo "precision done" >> runs/precision-seeds.times
