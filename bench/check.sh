#!/usr/bin/env bash
# The CI check of the benchmark harness: a quick run (a few pods, under 2 minutes) that must work
# end to end and leave nothing behind. No figure is checked.
exec "$(dirname "$0")/run.sh" --quick
