#!/usr/bin/env bash
# Every benchmark, one after another, with the commands behind the README's Benchmarks table.
# Run it on an otherwise idle machine (each JSON records the load average it saw).
#
#   GRAPHORMER_DATA=/path/to/Graphormer/graphormer/data \
#   NEURALSPEECH=/path/to/NeuralSpeech/PriorGrad-vocoder \
#   M21_CACHE=/path/to/m21-midi  bash benchmarks/run_all.sh [NAME...]
#
# GRAPHORMER_DATA: a microsoft/Graphormer checkout's graphormer/data (the original pipeline);
# NEURALSPEECH: a microsoft/NeuralSpeech checkout's PriorGrad-vocoder (the original inference);
# M21_CACHE: where the music21 corpus is exported to MIDI once (needs `pip install music21`).
# Without them, the Graphormer and PriorGrad runs leave out the original side and MusicBERT runs on the
# encoding fixtures. NAME... runs only those benchmarks (e.g. `bash benchmarks/run_all.sh loading deq`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

run() {
  local name=$1; shift
  if [ ${#SELECTED[@]} -gt 0 ] && [[ ! " ${SELECTED[*]} " =~ " $name " ]]; then return; fi
  echo "== $name: $*"
  "$PY" "$@"
}

SELECTED=("$@")
run musicbert benchmarks/musicbert.py ${M21_CACHE:+--music21-corpus "$M21_CACHE"} --repeats 5
run graphormer benchmarks/graphormer.py ${GRAPHORMER_DATA:+--graphormer "$GRAPHORMER_DATA"} \
  --featurize-molecules 1000 --arch slim --forward-arch base --repeats 5 --e2e-repeats 2
run featurize_parallel benchmarks/featurize_parallel.py --repeats 5
run dmp benchmarks/dmp.py --molecules 2000 --repeats 5
run priorgrad benchmarks/priorgrad.py ${NEURALSPEECH:+--neuralspeech "$NEURALSPEECH"} --seconds 1 --repeats 5
run deq benchmarks/deq.py --batch 16 --repeats 5
run loading benchmarks/loading.py --repeats 5
run nasbert benchmarks/nasbert.py --repeats 5
run graphormer3d benchmarks/graphormer3d.py
run hub_transfer benchmarks/hub_transfer.py
