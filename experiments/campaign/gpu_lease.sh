#!/usr/bin/env bash
# One GPU lease for the training campaign (issue 15, section 6), run by the device tool from the
# repository root:
#   the campaign recipe (configs/sice_smallnet_campaign.yaml) at the official size, crop 160 and
#   batch 16 with bf16 autocast, from the bundled weights, for a wall-clock budget fixed in advance;
#   the trainer is stopped with SIGTERM (it saves its state) and the weight average is brought back.
# What comes back under $OUT (the tool returns at most 8 files of at most 16 MiB each):
#   ema_final_a/b.safetensors  the final weight average in fp32, split in two (gpu_export.py);
#                              experiments/campaign/gpu_merge.py joins them into a weights file
#   ema_q1..q3.safetensors     fp16 weight averages at 1/4, 1/2, 3/4 of the budget: learning curve only,
#                              the selection rule takes the final average alone
#   summary.json, logs.tar.gz  iterations, it/s, GPU, the trainer's logs and console, and (PROFILE=1,
#                              the default) profile/: gpu_profile.py's step-time breakdown at batch
#                              16/32/64, run after the export with its own time limit (PROFILE_S);
#                              keep TRAIN_S + PROFILE_S + ~90 s of start-up and export under the
#                              device tool's 600 s per call
# The data does not travel by itself: copy ../shared/data/sice-lowlight/{train,train-mild} into
# gpu_data/ (ignored by git) and name gpu_data in the tool's carry.
# Dry run on a CPU: DEVICE=cpu PRECISION=fp32 BATCH=2 CROP=96 WORKERS=1 TRAIN_S=90 OUT=/tmp/o bash ...
set -u
OUT=${OUT:?set OUT to the folder that comes back}
TRAIN_S=${TRAIN_S:-420}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
BATCH=${BATCH:-16}
CROP=${CROP:-160}
WORKERS=${WORKERS:-6}
CKPT_EVERY=${CKPT_EVERY:-200}
LOG_EVERY=${LOG_EVERY:-50}
DATA=${DATA:-gpu_data/sice-lowlight}
RUN=${RUN:-/tmp/llflow_gpu_run}
PROFILE=${PROFILE:-1}
PROFILE_S=${PROFILE_S:-100}
# optim.aux_ssim of the stage (0: the session 11 recipe; session 16 pilots chose 3 on the CPU)
AUX_SSIM=${AUX_SSIM:-0}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG=$OUT/console.log
mkdir -p "$OUT" "$RUN"
T0=$(date +%s)
say() { echo "[lease $(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } >> "$LOG" 2>&1
[ -d "$DATA/train" ] && [ -d "$DATA/train-mild" ] || { say "no training data under $DATA"; exit 2; }

# train_for SECONDS PRECISION WORKERS: run the trainer, snapshot state.pt at 1/4, 1/2 and 3/4 of
# SECONDS (the trainer writes it atomically every ckpt_every iterations), stop it with SIGTERM.
train_for() {
    local seconds=$1 precision=$2 workers=$3 start pid q
    say "training for ${seconds}s: device $DEVICE, precision $precision, batch $BATCH, crop $CROP, workers $workers"
    python3 -m llflow train configs/sice_smallnet_campaign.yaml --device "$DEVICE" --output "$RUN" \
        --set "data.train=$DATA/train" --set "data.extra_train=[$DATA/train-mild]" --set data.val=null \
        --set "data.crop=$CROP" --set "data.batch_size=$BATCH" --set "data.num_workers=$workers" \
        --set "optim.precision=$precision" --set optim.iterations=1000000 --set "optim.aux_ssim=$AUX_SSIM" \
        --set "schedule.ckpt_every=$CKPT_EVERY" --set "schedule.log_every=$LOG_EVERY" --set schedule.val_every=1000000 \
        >> "$LOG" 2>&1 &
    pid=$!
    start=$(date +%s)
    for q in 1 2 3 4; do
        while kill -0 "$pid" 2>/dev/null && [ $(( $(date +%s) - start )) -lt $(( seconds * q / 4 )) ]; do sleep 1; done
        kill -0 "$pid" 2>/dev/null || break
        if [ "$q" -lt 4 ] && [ -f "$RUN/state.pt" ]; then cp "$RUN/state.pt" "$RUN/snap_q$q.pt"; say "snapshot q$q"; fi
    done
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 90); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid"; say "trainer exited with $? after $(( $(date +%s) - start ))s"
}

train_for "$TRAIN_S" "$PRECISION" "$WORKERS"
if [ ! -f "$RUN/state.pt" ] && [ "$PRECISION" != fp32 ]; then
    # Nothing saved (the first checkpoint comes after ckpt_every iterations): the run broke early.
    # Spend what is left of the budget on the plain fp32 path without worker processes.
    left=$(( TRAIN_S - ($(date +%s) - T0) ))
    if [ "$left" -gt 60 ]; then say "no state saved: retrying in fp32 without workers"; train_for "$left" fp32 0; fi
fi
[ -f "$RUN/state.pt" ] || { say "no training state: nothing to bring back"; tar -C "$RUN" -czf "$OUT/logs.tar.gz" . 2>/dev/null; exit 3; }

python3 experiments/campaign/gpu_export.py "$RUN" "$OUT" --started "$T0" 2>&1 | tee -a "$LOG"
if [ "$PROFILE" = 1 ]; then
    # After the export, so a failing or slow profile cannot cost the weights.
    say "profiling for at most ${PROFILE_S}s"
    timeout "$PROFILE_S" python3 experiments/campaign/gpu_profile.py "$RUN/profile" --device "$DEVICE" \
        --precision "$PRECISION" --crop "$CROP" --data "$DATA" --workers "$WORKERS" >> "$LOG" 2>&1
    say "profile exited with $?"
fi
(cd "$RUN" && tar -czf "$OUT/logs.tar.gz" log.jsonl train.csv config.yaml $(ls -d profile 2>/dev/null)) 2>/dev/null
say "done"
