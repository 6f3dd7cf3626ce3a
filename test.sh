#!/usr/bin/env bash
# The test command of the README: unit and integration tests of every
# package under the race detector, then the end-to-end tests in tests/
# (real binary, real HTTP, crash loops).
set -euo pipefail
cd "$(dirname "$0")"
go test -race -count=1 $(go list ./... | grep -v '/tests$')
go test -count=1 ./tests/... "$@"
