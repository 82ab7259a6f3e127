#!/usr/bin/env bash
# Whole `python -m src.train fit` processes of two checkouts, alternating: wall seconds of each run, then the medians.
#
#   bench/fit_ab.sh BEFORE_DIR AFTER_DIR [ROUNDS] [-- extra fit arguments]
#   git worktree add /tmp/before caf6685 && ln -s "$PWD/.venv" /tmp/before/.venv && ln -s "$PWD/data" /tmp/before/data
#   bench/fit_ab.sh /tmp/before . 3                              # the default fit (15 epochs), medians of 3
#   bench/fit_ab.sh /tmp/before . 3 -- --config configs/best.yaml
#
# Each checkout runs its own src/ with its own .venv and data/ (symlinks are fine); runs go to
# lightning_logs/fit_ab/ in each checkout. Run it on a quiet machine with the default threads.
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); rounds=${3:-3}
shift $(( $# < 3 ? $# : 3 )); [[ ${1:-} == "--" ]] && shift
declare -A times=([before]="" [after]="")
for ((r = 1; r <= rounds; r++)); do
  for side in before after; do
    dir=${!side}
    start=$(date +%s.%N)
    (cd "$dir" && .venv/bin/python -m src.train fit --experiment fit_ab "$@" > /dev/null 2>&1)
    s=$(echo "$(date +%s.%N) - $start" | bc)
    times[$side]+="$s "
    echo "round $r $side ($dir): $s s"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
b=$(echo "${times[before]}" | median); a=$(echo "${times[after]}" | median)
echo "median before $b s, after $a s, after/before $(echo "scale=4; $a / $b" | bc)"
