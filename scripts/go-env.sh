#!/usr/bin/env bash
# Runs a command (a `go` one) in the Go environment the simulator launcher
# (tests/acceptance/vcsim) is built and tested in: offline, GOPATH mode against
# Debian's golang-github-vmware-govmomi-dev, build cache in .testbed/gocache.
#
#   scripts/go-env.sh go build -o .testbed/bin/vcsim ./tests/acceptance/vcsim
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$root/.testbed/gocache"
exec "$@"
