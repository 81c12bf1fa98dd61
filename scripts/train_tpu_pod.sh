#!/usr/bin/env bash
# Training on a multi-host Cloud TPU slice (e.g. v5e-32, v4-64): the same command on every worker.
#
#   TPU_NAME=my-pod ZONE=us-central2-b WORKDIR=/mnt/shared/runs/exp1 \
#       scripts/train_tpu_pod.sh --set train.batch_size=64
#
# * Runs `ctsearcher train --distributed` on all workers over `gcloud ... ssh --worker=all`;
#   `jax.distributed.initialize()` finds the other hosts from the TPU metadata.
# * REPO (this checkout with its .venv), the dataset, the features and WORKDIR must exist on every
#   worker at the same path; WORKDIR must be shared (Filestore/NFS or a gcsfuse mount), since every
#   host writes its part of each checkpoint there.
# * train.batch_size must be a multiple of the number of TPU chips (x grad_accum_steps).
# * Preemption (spot/preemptible TPUs) sends SIGTERM: a checkpoint is saved and the command exits 0;
#   run the script again to resume exactly where it stopped.
# * INSTALL=1 installs the TPU build ('.[tpu]') into REPO/.venv on every worker before the check.
# * Logs: process 0 writes WORKDIR/tb and WORKDIR/metrics.jsonl; other workers log nothing.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU zone}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REPO=${REPO:-$HOME/ctsearcher-jax}
CONFIG=${CONFIG:-configs/paper.yaml}
WORKDIR=${WORKDIR:?set WORKDIR to a directory shared by every worker}

ARGS=""
for a in "$@"; do ARGS+=" $(printf '%q' "$a")"; done

# Every worker first checks that its jaxlib is the TPU build and sees its chips (exit 2 with the
# install command otherwise; INSTALL=1 installs '.[tpu]' on every worker first).
SETUP="cd $(printf '%q' "$REPO")"
if [[ "${INSTALL:-0}" == 1 ]]; then
    SETUP+=" && .venv/bin/python -m pip install --quiet -e '.[tpu]'"
fi
SETUP+=" && .venv/bin/python -m ctsearcher_jax.cli devices --require tpu"

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" $PROJECT_FLAG --worker=all --command \
    "$SETUP && .venv/bin/python -m ctsearcher_jax.cli train --distributed \
     --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")$ARGS"
