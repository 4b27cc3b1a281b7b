#!/usr/bin/env bash
# What the distributed test tier (tests/distributed) needs from Debian: PostgreSQL (initdb, pg_ctl)
# and Redis. Idempotent: installs only what is missing, so repeated runs cost nothing.
set -euo pipefail

missing=()
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  missing+=(redis-server)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-distributed-deps: need ${missing[*]} (apt-get install) but am not root and have no sudo" >&2
  exit 1
fi
echo "install-distributed-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# Another apt process (e.g. unattended upgrades) may hold the lock for a while: wait for it.
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
