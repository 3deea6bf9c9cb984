#!/usr/bin/env bash
# make test-mpi: the MPI transport end to end, under mpirun (one rank per stage).
#  1. a 6-layer MLP trains to bit-identical losses with 2 and 4 ranks as in one process
#     (1F1B and GPipe; with a plan, and with profiles only so that rank 0 plans);
#  2. an injected failure on one rank ends every rank with an error naming it, quickly;
#  3. a rank that dies (SIGKILL, or exit(1)) ends the others with an error naming it
#     within the failure timeout (mpirun --enable-recovery keeps the survivors alive long
#     enough to report; without it mpirun itself kills the job);
#  4. a world size that does not match the plan is a clear error on every rank;
#  5. live migration across ranks (vpipe train --migrate-at): two migrations with 2 and 4
#     ranks keep the loss trajectory bit-identical to the in-process pipeline without
#     migration, and every layer's parameters (the moved ones included) end bit-identical on
#     the rank that owns them; a rank dying at a migration's flush ends every other rank
#     naming it; ranks that did not all apply the same plan all fail, naming that; a
#     receiver without room abandons the migration on every rank and training goes on;
#  6. online re-planning across ranks: a slowdown injected on rank 1 (then rank 0) leads
#     rank 0 to decide, on every rank's measurements, a migration of layers off the slow
#     stage that every rank applies before the same step, with the in-process losses; and
#     the same after a restart from a checkpoint (each rank resumes its own window).
#  7. checkpoint and restart (docs/checkpoint.md): 4 ranks save every 2 steps, a rank is
#     killed mid-run, and a restart from the last checkpoint with 4 ranks, and with 2 ranks
#     on a new plan, prints the same losses as an uninterrupted run for the steps after it;
#     a rank dying inside a save stops the others naming it, and the last checkpoint stands.
set -u
CLI=${CLI:-$(pwd)/.build/release/vpipe-cli}
PY=${PYTHON:-python3}
MK="$PY $(pwd)/Tests/mpi/make_config.py"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN="mpirun --oversubscribe --tag-output"
T=3                         # failure_timeout_seconds of the runs that inject a failure; runs that
                            # must succeed keep the default (30 s): 2-4 ranks oversubscribed on a
                            # slow machine may not answer a ping within 3 s and be taken for lost
BOUND=40                    # seconds within which every rank must have stopped, mpirun's start-up
                            # and teardown of 2-4 processes included (detection itself is T + ~1 s;
                            # a rank that never stops runs into mpi()'s 60 s and fails)
# mpirun SECONDS ARGS...: mpirun, killed (-k) if it does not end SECONDS after it was told
# to: Open MPI 4.1.4's mpirun sometimes deadlocks in PMIx_server_finalize after its ranks
# exited (seen when every rank exits with an error), and a plain `timeout` waits for it
# forever. Its exit status is kept in $dir/mpirun.rc for check_all.
mpi() {
  local seconds=$1; shift
  rm -f "$dir/mpirun.rc"      # check_all must never read a previous run's status
  timeout -k 5 "$seconds" $MPIRUN "$@"
  local rc=$?; echo $rc > "$dir/mpirun.rc"; return $rc
}
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

for np in 2 4; do
  for sched in 1f1b gpipe; do
    $MK "$dir/c.pb" --stages $np --schedule $sched
    out=$(mpi 60 -np $np "$CLI" train "$dir/c.pb" --steps 6 --compare-in-process 2>&1)
    echo "$out" | grep -E "distributed|in-process" | sed 's/^\[[0-9,]*\]<stdout>:/    /'
    if echo "$out" | grep -q "loss trajectories identical"; then ok "np=$np $sched: MPI losses == in-process losses"; else bad "np=$np $sched"; echo "$out" | tail -20; fi
  done
done
$MK "$dir/p.pb" --stages 4 --profiles
out=$(mpi 60 -np 4 "$CLI" train "$dir/p.pb" --steps 4 --compare-in-process 2>&1)
if echo "$out" | grep -q "loss trajectories identical"; then ok "np=4, no plan: rank 0 planned from profiles and broadcast the plan"; else bad "np=4 profiles"; echo "$out" | tail -20; fi

# Live migration across ranks: before steps 2 and 4 every rank applies the same plan.
# np=2: [0-2][3-5] -> [0][1-5] -> [0-3][4-5]; np=4: [0][1-2][3][4-5] -> [0-2][3][4][5] ->
# [0][1][2][3-5] (layers move to neighbours and further, some twice).
for np in 2 4; do
  if [ $np -eq 2 ]; then sa=0,1; sb=0,4; else sa=0,3,4,5; sb=0,1,2,3; fi
  for sched in 1f1b gpipe; do
    $MK "$dir/c.pb" --stages $np --schedule $sched
    $MK "$dir/a.pb" --stages $np --schedule $sched --split $sa --plan-only
    $MK "$dir/b.pb" --stages $np --schedule $sched --split $sb --plan-only
    out=$(mpi 60 -np $np "$CLI" train "$dir/c.pb" --steps 6 --compare-in-process --checksums \
          --migrate-at 2 --migrate-plan "$dir/a.pb" --migrate-at 4 --migrate-plan "$dir/b.pb" 2>&1)
    echo "$out" | grep -E "distributed|in-process  " | sed 's/^\[[0-9,]*\]<stdout>:/    /'
    applied=$(echo "$out" | grep -c "migration before step [24]: applied")
    if echo "$out" | grep -q "loss trajectories identical" && [ "$applied" -eq $((2 * np)) ]; then
      ok "np=$np $sched, 2 migrations across ranks: MPI losses == in-process losses without migration"
    else bad "np=$np $sched migration: $applied of $((2 * np)) applied"; echo "$out" | tail -20; fi
    # Each layer's checksum: one owning rank, equal to the in-process run's.
    ref=$(echo "$out" | grep -o "in-process: layer [0-9]* checksum [0-9a-f]*" | sed 's/in-process: //' | sort)
    got=$(echo "$out" | grep -o "rank [0-9]*: layer [0-9]* checksum [0-9a-f]*" | sed 's/rank [0-9]*: //' | sort)
    if [ -n "$ref" ] && [ "$ref" = "$got" ]; then ok "np=$np $sched: parameters of every layer (moved ones too) == in-process, bit for bit ($(echo $ref | wc -w | awk '{print $1/4}') layers)"
    else bad "np=$np $sched checksums"; echo "in-process:"; echo "$ref"; echo "MPI:"; echo "$got"; fi
  done
done

# Online re-planning across ranks: one stage's device runs 8x slower from iteration 3; every
# 3 iterations each rank shares its measurements, rank 0 decides for all and broadcasts the
# decision; every rank migrates before the same step, and the losses stay those of the
# in-process run (a migration never changes the trajectory). The plan starts as [0-2][3-5]:
# the moved layers must leave the slow stage (3-5 when stage 1 is slow, 0-2 when stage 0 is),
# so a migration that noise alone decided does not pass.
for slow in 1 0; do
  if [ $slow -eq 1 ]; then from='[345]'; else from='[012]'; fi
  $MK "$dir/r.pb" --stages 2 --profiles --replan-every 3 --slowdown $slow:8:3 --width 64
  out=$(mpi 90 -np 2 "$CLI" train "$dir/r.pb" --steps 12 --compare-in-process 2>&1)
  r0=$(echo "$out" | grep -o "rank 0: online migration decided after iteration [0-9]*: applied.*" | head -1 | sed 's/rank 0: //')
  r1=$(echo "$out" | grep -o "rank 1: online migration decided after iteration [0-9]*: applied.*" | head -1 | sed 's/rank 1: //')
  moved=$(echo "$r0" | grep -o "layers [0-9,]*" | sed 's/layers //')
  echo "$out" | grep -o "rank [01]: online \(migration\|re-planning\).*" | sed 's/^/    /'
  if [ -n "$r0" ] && [ "$r0" = "$r1" ] && echo "$moved" | grep -qx "$from\(,$from\)*" && echo "$out" | grep -q "loss trajectories identical"; then
    ok "np=2 slowdown on stage $slow: online re-planning moves layers $moved off it on every rank at the same step ($r0), losses == in-process"
  else bad "np=2 online re-planning across ranks, slowdown on stage $slow (first migration moved layers '$moved', expected only layers $from)"; echo "$out" | tail -20; fi
done

# Online re-planning after a restart: 2 ranks train 4 steps saving every 2, then a restart
# from that checkpoint trains to step 12 while stage 1 runs 8x slower from iteration 5. Each
# rank resumes its own re-planning window and calibration from its shard, so the slowdown is
# seen after the restart as it would be without one: the first migration moves layers off
# stage 1 on both ranks at the same step, and steps 5-12 equal an uninterrupted run's.
$MK "$dir/rr.pb" --stages 2 --profiles --replan-every 3 --slowdown 1:8:5 --width 64
rck="$dir/replan.vpck"
mpi 60 -np 2 "$CLI" train "$dir/rr.pb" --steps 4 --save-every 2 --checkpoint "$rck" >/dev/null 2>&1
out=$(mpi 90 -np 2 "$CLI" train "$dir/rr.pb" --steps 12 --resume "$rck" --compare-in-process 2>&1)
r0=$(echo "$out" | grep -o "rank 0: online migration decided after iteration [0-9]*: applied.*" | head -1 | sed 's/rank 0: //')
r1=$(echo "$out" | grep -o "rank 1: online migration decided after iteration [0-9]*: applied.*" | head -1 | sed 's/rank 1: //')
moved=$(echo "$r0" | grep -o "layers [0-9,]*" | sed 's/layers //')
if echo "$out" | grep -q "resumed from $rck after step 4" && [ -n "$r0" ] && [ "$r0" = "$r1" ] && echo "$moved" | grep -qx '[345]\(,[345]\)*' \
   && echo "$out" | grep -q "loss trajectories identical"; then
  ok "np=2 restart, then stage 1 slows down: re-planning moves layers $moved off it on both ranks ($r0), steps 5-12 == uninterrupted"
else bad "np=2 online re-planning after a restart (first migration moved layers '$moved', expected only layers 3-5)"; echo "$out" | tail -20; fi

# The receiving rank cannot place the moving layers (its device holds 4000 bytes): it still
# receives the transfers, votes no, and every rank keeps the old plan and trains on, exactly.
$MK "$dir/c.pb" --stages 2 --memory 1:4000
$MK "$dir/a.pb" --stages 2 --split 0,1 --plan-only
out=$(mpi 60 -np 2 "$CLI" train "$dir/c.pb" --steps 4 --compare-in-process --checksums --migrate-at 2 --migrate-plan "$dir/a.pb" 2>&1)
abandoned=$(echo "$out" | grep -c "NOT applied.*migration abandoned on every rank")
ref=$(echo "$out" | grep -o "in-process: layer [0-9]* checksum [0-9a-f]*" | sed 's/in-process: //' | sort)
got=$(echo "$out" | grep -o "rank [0-9]*: layer [0-9]* checksum [0-9a-f]*" | sed 's/rank [0-9]*: //' | sort)
if [ "$abandoned" -eq 2 ] && echo "$out" | grep -q "loss trajectories identical" && [ -n "$ref" ] && [ "$ref" = "$got" ]; then
  ok "np=2 receiver out of memory: migration abandoned on every rank, training continues unchanged"
else bad "np=2 receiver out of memory"; echo "$out" | tail -20; fi

# Every one of `ranks` must print an error containing `pattern` within BOUND seconds.
check_all() {
  local name=$1 out=$2 secs=$3 pattern=$4; shift 4
  local missing=""
  for r in "$@"; do
    echo "$out" | grep -F "rank $r: error:" | grep -qF "$pattern" || missing="$missing $r"
  done
  echo "$out" | grep -F ": error:" | sed 's/^\[[0-9,]*\]<std...>:/    /'
  local rc; rc=$(cat "$dir/mpirun.rc" 2>/dev/null)
  if [ -z "$missing" ] && [ "$secs" -gt $BOUND ] && { [ "$rc" = 124 ] || [ "$rc" = 137 ]; }; then
    # Every rank stopped with the error; mpirun itself hung after they exited (see mpi()).
    ok "$name (mpirun hung after every rank had stopped; killed after ${secs}s)"
  elif [ -z "$missing" ] && [ "$secs" -le $BOUND ]; then ok "$name (${secs}s)"; else bad "$name: ranks without the error:$missing, ${secs}s"; echo "$out" | tail -30; fi
}

for np in 2 4; do
  fs=$((np - 1)); [ $np -eq 4 ] && fs=2
  $MK "$dir/f.pb" --stages $np --fail 3:$fs:1 --timeout $T
  start=$(date +%s)
  out=$(mpi 60 -np $np "$CLI" train "$dir/f.pb" --steps 6 2>&1)
  secs=$(( $(date +%s) - start ))
  check_all "np=$np injected failure on stage $fs: every rank stops naming it" "$out" $secs "stage $fs" $(seq 0 $((np - 1)))

  for how in kill exit; do
    victim=1
    hook="$victim:3"; [ $how = exit ] && hook="$victim:3:exit"
    $MK "$dir/k.pb" --stages $np --timeout $T
    start=$(date +%s)
    out=$(VPIPE_TEST_KILL=$hook mpi 60 --enable-recovery -np $np "$CLI" train "$dir/k.pb" --steps 6 2>&1)
    secs=$(( $(date +%s) - start ))
    survivors=$(seq 0 $((np - 1)) | grep -vx $victim)
    check_all "np=$np rank $victim dies ($how): every other rank stops naming it" "$out" $secs "rank $victim (stage $victim) did not answer within $T s" $survivors
  done
done

# A rank dies at the flush of a migrating step, before handing over its gradients.
for np in 2 4; do
  if [ $np -eq 2 ]; then sa=0,1; sb=0,4; victim=1; else sa=0,3,4,5; sb=0,1,2,3; victim=2; fi
  $MK "$dir/k.pb" --stages $np --timeout $T
  $MK "$dir/a.pb" --stages $np --split $sa --plan-only
  $MK "$dir/b.pb" --stages $np --split $sb --plan-only
  for how in migration migration:exit; do
    start=$(date +%s)
    out=$(VPIPE_TEST_KILL=$victim:4:$how mpi 60 --enable-recovery -np $np "$CLI" train "$dir/k.pb" --steps 6 \
          --migrate-at 2 --migrate-plan "$dir/a.pb" --migrate-at 4 --migrate-plan "$dir/b.pb" 2>&1)
    secs=$(( $(date +%s) - start ))
    survivors=$(seq 0 $((np - 1)) | grep -vx $victim)
    check_all "np=$np rank $victim dies during a migration ($how): every other rank stops naming it" "$out" $secs "rank $victim (stage $victim) did not answer within $T s" $survivors
  done
done
# Rank 1's host does not apply the plan the others apply: every rank fails, saying so.
$MK "$dir/k.pb" --stages 4 --timeout $T
$MK "$dir/a.pb" --stages 4 --split 0,3,4,5 --plan-only
start=$(date +%s)
out=$(VPIPE_TEST_SKIP_MIGRATE=1 mpi 60 -np 4 "$CLI" train "$dir/k.pb" --steps 4 --migrate-at 2 --migrate-plan "$dir/a.pb" 2>&1)
secs=$(( $(date +%s) - start ))
check_all "np=4 rank 1 skips the migration: every rank stops with a clear error" "$out" $secs "did not all apply the same plan" 0 1 2 3

# From Python: each rank opens a session through the C ABI (ctypes) with the same config.
$MK "$dir/c.pb" --stages 2
out=$(VPIPE_LIBRARY=${VPIPE_LIBRARY:-$(pwd)/.build/release/libvpipe.so} mpi 60 -np 2 $PY Tests/mpi/py_session.py "$dir/c.pb" 2>&1)
# Only the numbers: mpirun may forward a rank's newline separately, so the other rank's
# "[1,1]<stdout>:py rank 1 losses ..." can follow on the same line (seen twice in four runs).
l0=$(echo "$out" | grep -o "py rank 0 losses [-0-9.e ]*[0-9]" | cut -d' ' -f5-)
l1=$(echo "$out" | grep -o "py rank 1 losses [-0-9.e ]*[0-9]" | cut -d' ' -f5-)
if [ -n "$l0" ] && [ "$l0" = "$l1" ]; then ok "python host, 2 ranks: same loss on every rank ($l0)"; else bad "python host"; echo "$out" | tail; fi

$MK "$dir/c.pb" --stages 4
out=$(mpi 60 -np 3 "$CLI" train "$dir/c.pb" --steps 2 2>&1)
check_all "np=3 for a 4-stage plan: a clear error" "$out" 0 "the plan has 4 stages but the MPI world has 3 ranks" 0 1 2

# Checkpoint, kill, restart. Rank 2 dies before step 5, after the checkpoint of step 4.
# c4k.pb: the runs where rank 2 dies (the others must notice within T); c4/c2.pb: restarts
# that must succeed (default failure timeout).
$MK "$dir/c4k.pb" --stages 4 --timeout $T
$MK "$dir/c4.pb" --stages 4
$MK "$dir/c2.pb" --stages 2
ck="$dir/run.vpck"
out=$(VPIPE_TEST_KILL=2:5 mpi 60 --enable-recovery -np 4 "$CLI" train "$dir/c4k.pb" --steps 8 --save-every 2 --checkpoint "$ck" 2>&1)
shards=$(ls "$dir" | grep -c "^run.vpck.it4.rank[0-3]$")
if echo "$out" | grep -q "saved $ck after step 4" && [ -f "$ck" ] && [ "$shards" -eq 4 ] && ! ls "$dir" | grep -q "run.vpck.it2"; then
  ok "np=4 checkpoints every 2 steps: manifest + 4 shards of step 4 (those of step 2 removed), then rank 2 was killed"
else bad "np=4 checkpoint before the kill ($shards shards)"; ls "$dir"; echo "$out" | tail -20; fi
for np in 4 2; do
  out=$(mpi 60 -np $np "$CLI" train "$dir/c$np.pb" --steps 8 --resume "$ck" --compare-in-process 2>&1)
  echo "$out" | grep -E "distributed|in-process  " | sed 's/^\[[0-9,]*\]<stdout>:/    /'
  if echo "$out" | grep -q "resumed from $ck after step 4" && echo "$out" | grep -q "loss trajectories identical"; then
    ok "restart with np=$np from the step-4 checkpoint of 4 ranks: steps 5-8 == the uninterrupted run's, bit for bit"
  else bad "restart np=$np"; echo "$out" | tail -20; fi
done
# Rank 2 dies inside the save after step 6 (its shard written, before the ranks exchange
# what they wrote): every other rank stops within the failure timeout, naming it; the
# manifest still names step 4's shards, all still there, and a restart resumes from step 4.
for how in save save:exit; do
  start=$(date +%s)
  out=$(VPIPE_TEST_KILL=2:6:$how mpi 60 --enable-recovery -np 4 "$CLI" train "$dir/c4k.pb" --steps 8 --resume "$ck" \
        --save-every 2 --checkpoint "$ck" 2>&1)
  secs=$(( $(date +%s) - start ))
  check_all "np=4 rank 2 dies inside a save ($how): every other rank stops naming it" "$out" $secs "rank 2 (stage 2) did not answer within $T s" 0 1 3
  shards=$(ls "$dir" | grep -c "^run.vpck.it4.rank[0-3]$")
  out=$(mpi 60 -np 2 "$CLI" train "$dir/c2.pb" --steps 5 --resume "$ck" 2>&1)
  if [ "$shards" -eq 4 ] && echo "$out" | grep -q "resumed from $ck after step 4"; then
    ok "np=4 after the death inside the save ($how): the step-4 checkpoint stands (4 shards) and resumes"
  else bad "checkpoint after a death inside the save ($how): $shards shards of step 4"; ls "$dir"; echo "$out" | tail -10; fi
done
# A damaged shard is refused on every rank, naming it; nothing is loaded.
printf 'X' | dd of="$dir/run.vpck.it4.rank1" bs=1 seek=100 conv=notrunc 2>/dev/null
out=$(mpi 60 -np 2 "$CLI" train "$dir/c2.pb" --steps 8 --resume "$ck" 2>&1)
check_all "np=2 resuming with a corrupted shard: every rank refuses, naming the shard" "$out" 0 "run.vpck.it4.rank1" 0 1

if [ $fails -ne 0 ]; then echo "test-mpi: $fails failed"; exit 1; fi
echo "test-mpi: all passed"
