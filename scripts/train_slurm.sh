#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, each driving all of its GPUs.
#
#   sbatch scripts/train_slurm.sh                                   # configs/paper.yaml -> runs/paper
#   CONFIG=configs/paper.yaml WORKDIR=/shared/runs/exp1 sbatch --nodes=4 scripts/train_slurm.sh \
#       --set train.batch_size=64
#
# * Every node runs `ctsearcher train`; with more than one task, `jax.distributed.initialize()`
#   reads the coordinator, process count and id from SLURM's variables (no flags needed).
# * WORKDIR, the dataset and the features must be on a filesystem every node sees.
# * train.batch_size must be a multiple of the total GPU count (x train.grad_accum_steps);
#   a clear ConfigError at start-up says so otherwise.
# * --signal=TERM@300 asks SLURM to send SIGTERM five minutes before the time limit: training
#   saves a checkpoint and exits 0. The script then resubmits itself until the run is complete
#   (WORKDIR/model/ exists); each new job resumes from WORKDIR exactly. Preemption with
#   --requeue works the same way.
#
#SBATCH --job-name=ctsearcher-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out

set -euo pipefail

CONFIG=${CONFIG:-configs/paper.yaml}
WORKDIR=${WORKDIR:-runs/paper}
PYTHON=${PYTHON:-.venv/bin/python}
MAX_RESUBMITS=${MAX_RESUBMITS:-20}
RESUBMIT_COUNT=${RESUBMIT_COUNT:-0}

# One process per node sees all local GPUs; keep XLA from grabbing all memory up front.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}

# Refuse to train on CPU by accident: the CUDA build of jaxlib must be installed and see the GPUs
# (REQUIRE_BACKEND=cpu accepts a CPU run, e.g. to try the script).
if ! "$PYTHON" -m ctsearcher_jax.cli devices --require "${REQUIRE_BACKEND:-gpu}"; then
    echo "no GPU backend in $PYTHON: install it with  $PYTHON -m pip install -e '.[cuda]'" >&2
    exit 2
fi

# srun forwards SIGTERM to every task (the training processes agree on one step to stop at).
srun --kill-on-bad-exit=1 "$PYTHON" -m ctsearcher_jax.cli train \
    --config "$CONFIG" --workdir "$WORKDIR" "$@"

if [[ ! -f "$WORKDIR/model/model.safetensors" ]]; then
    if (( RESUBMIT_COUNT < MAX_RESUBMITS )); then
        echo "training not finished: resubmitting ($((RESUBMIT_COUNT + 1))/$MAX_RESUBMITS)"
        CONFIG="$CONFIG" WORKDIR="$WORKDIR" RESUBMIT_COUNT=$((RESUBMIT_COUNT + 1)) \
            sbatch --export=ALL "$0" "$@"
    else
        echo "training not finished after $MAX_RESUBMITS resubmissions; resume by hand" >&2
        exit 1
    fi
fi
