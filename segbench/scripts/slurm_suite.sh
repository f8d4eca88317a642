#!/usr/bin/env bash
# Split a segbench suite over a Slurm job array: array task i of n runs every n-th pair of the suite
# (`segbench run SUITE --shard i/n`, positions counted after --seeds), so the tasks never train the same pair and
# their records (ids differ per pair, hardware class and name) merge into one leaderboard folder.
#
#   SUITE=default sbatch --array=0-3 slurm_suite.sh --seeds 3          # 4 tasks, extra args go to `segbench run`
#   python -m segbench leaderboard --suite default --seeds 3            # afterwards: which pairs are still missing
#
# Each task uses the GPUs Slurm gives it: one GPU -> one process; several -> DDP through torchrun on that node
# (batch_size stays the global batch). Put the store and the leaderboard on a filesystem every node sees.
#SBATCH --job-name=segbench
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=segbench-%A_%a.out
set -euo pipefail

SUITE="${SUITE:-default}"
COUNT="${SLURM_ARRAY_TASK_COUNT:?submit as a job array: sbatch --array=0-<N-1> $0}"
INDEX="$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} ))"
GPUS="${SLURM_GPUS_ON_NODE:-0}"
LEADERBOARD="${LEADERBOARD:-leaderboard}"           # shared folder: every task writes its records here
export SEGBENCH_STORE="${SEGBENCH_STORE:-$HOME/.cache/segbench}"  # shared weights folder
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
PYTHON="${PYTHON:-python}"                            # the environment's interpreter (set it when none is active)

ARGS=(run "$SUITE" --shard "$INDEX/$COUNT" --leaderboard "$LEADERBOARD" --no-progress "$@")
echo "segbench: suite $SUITE, shard $INDEX/$COUNT, $GPUS GPU(s) on $(hostname)"
if [ "$GPUS" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" -m segbench "${ARGS[@]}"
fi
exec "$PYTHON" -m segbench "${ARGS[@]}"
