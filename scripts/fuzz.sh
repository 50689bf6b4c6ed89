#!/usr/bin/env bash
# `make fuzz`: time-bounded random fuzzing. Runs rounds of tests/fuzz, each with fresh random
# seeds, until FUZZ_MINUTES (default 30) have passed, and stops at the first failure. A failing
# example is saved in .hypothesis/ and replayed first on the next run, so a found bug stays found.
# Rounds (rather than one huge max_examples) make the run end on time on a loaded machine.
set -euo pipefail
py=${PY:-.venv/bin/python}
minutes=${FUZZ_MINUTES:-30}
examples=${FUZZ_EXAMPLES:-200}
start=$(date +%s)
end=$((start + minutes * 60))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  echo "fuzz: round $round ($examples examples per parser, $(( ($(date +%s) - start) / 60 )) of $minutes min)"
  if ! HYPOTHESIS_PROFILE=fuzz RETLINK_FUZZ_EXAMPLES="$examples" "$py" -m pytest -q tests/fuzz; then
    echo "fuzz: round $round FAILED (the example is saved in .hypothesis/ and replayed first next time)" >&2
    exit 1
  fi
done
echo "fuzz: $round rounds in $(( ($(date +%s) - start) / 60 )) min, nothing found"
