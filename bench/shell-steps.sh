#!/usr/bin/env bash
# Benchmark: 100 no-op shell steps under runbook, next to a bash script running the same 100
# commands, and the fdatasyncs runbook issues per step. Run by hand (not a test):
#
#   bench/shell-steps.sh [STEPS] [REPEATS]
#
# Prints a table. Needs strace for the fdatasync count (testbeds/install.sh installs it).
set -euo pipefail

steps=${1:-100}
repeats=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/release/runbook"

{
  echo "runbook: bench-shell"
  echo "steps:"
  for i in $(seq 1 "$steps"); do
    echo "  - id: s$i"
    echo "    shell: { args: [\"true\"] }"
  done
} > "$work/bench.yaml"

{
  echo "#!/usr/bin/env bash"
  echo "set -e"
  for _ in $(seq 1 "$steps"); do echo "true"; done
} > "$work/bench.sh"
chmod +x "$work/bench.sh"

# Wall time of a command in seconds (monotonic clock).
seconds() {
  python3 - "$@" <<'PY'
import subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.4f}")
PY
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

rb=()
sh=()
for r in $(seq 1 "$repeats"); do
  rb+=("$(seconds env RUNBOOK_JOURNAL="$work/journal-$r" "$bin" run "$work/bench.yaml")")
  sh+=("$(seconds "$work/bench.sh")")
done
rb_med=$(printf '%s\n' "${rb[@]}" | median)
sh_med=$(printf '%s\n' "${sh[@]}" | median)

syncs="n/a (install strace)"
if command -v strace >/dev/null; then
  strace -f -qq -e trace=fdatasync -o "$work/strace.out" \
    env RUNBOOK_JOURNAL="$work/journal-strace" "$bin" run "$work/bench.yaml" >/dev/null
  n=$(grep -c 'fdatasync(' "$work/strace.out" || true)
  syncs=$(python3 -c "print(f'{$n / $steps:.2f} ({$n} in all)')")
fi

per() { python3 -c "print(f'{$1 * 1000 / $steps:.2f} ms')"; }
printf '\n%-44s %-22s %s\n' "what ($steps steps, median of $repeats)" "wall" "per step"
printf '%-44s %-22s %s\n' "--------------------------------------------" "----------------------" "--------"
printf '%-44s %-22s %s\n' "runbook run ($steps no-op shell steps)" "${rb_med} s" "$(per "$rb_med")"
printf '%-44s %-22s %s\n' "bash script ($steps × true)" "${sh_med} s" "$(per "$sh_med")"
printf '%-44s %-22s\n' "fdatasync calls per step (runbook)" "$syncs"
