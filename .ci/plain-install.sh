#!/usr/bin/env bash
# A plain `pip install .` (no extras, so no MPI library anywhere: the mpich wheel comes only
# with [mpi] and this machine has no system MPI) runs `hpcue run` at tiny sizes and
# `hpcue doctor`, from a folder outside the repository. Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
# beside the repository, so that the hard links below stay on one file system
tmp="$(mktemp -d "$(dirname "$repo")/.hpcue-plain.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv --without-pip "$tmp/venv"
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
# torch and the other dependencies come from .venv as hard links: a second pip install of the
# CUDA build of torch would take another 5.5 GB, more than a CI machine's disk may have left.
# Then the MPI library (the mpich wheel; mpi4py is a plain dependency with no library of its
# own) and the editable hpcue go, and hpcue is installed as a user would.
cp -al "$(purelib .venv/bin/python)/." "$(purelib "$tmp/venv/bin/python")/"
"$tmp/venv/bin/python" -m pip uninstall -q -y hpcue mpich
"$tmp/venv/bin/python" -m pip install -q "$repo"
if "$tmp/venv/bin/python" -c "from mpi4py import MPI" 2>/dev/null; then
    echo "plain-install: an MPI library loads here; this check needs a machine without one" >&2
    exit 1
fi
mkdir "$tmp/work"
cd "$tmp/work"
export OMP_NUM_THREADS=1
tiny=(--set data.image_size=16 --set surrogate.pretrain_epochs=2 --set cluster.n_init=2
      --set train.epochs=2 --set train.generator_width=4 --set train.generator_blocks=1
      --set victim.epochs=2 --set victim.seeds=1 --set "victim.baselines=[]"
      --set "victim.defenses=[]")
"$tmp/venv/bin/hpcue" run --out run "${tiny[@]}" > run.log 2>&1 || { tail -30 run.log; exit 1; }
test -s run/results.json
"$tmp/venv/bin/hpcue" doctor --out doctor > doctor.log 2>&1 || { cat doctor.log; exit 1; }
grep -E '^(ok|FAIL|info)|^doctor:' doctor.log
echo "plain-install: hpcue run and hpcue doctor passed without an MPI library"
