#!/usr/bin/env bash
# The programs the test suites run besides Python: redis-server and redis-cli (the cluster
# and bus tests start private servers) and node with npm (the Node client test). Installs
# the missing ones with apt-get (through sudo when not root); where it cannot, says which
# packages to install and fails.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing ${missing[*]} for the tests" >&2
sudo=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo)
    else
        echo "error: the tests need ${missing[*]}; install them (e.g. sudo apt-get install ${missing[*]}) and run make test again" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null; then
    echo "error: the tests need ${missing[*]} and this machine has no apt-get; install them and run make test again" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
