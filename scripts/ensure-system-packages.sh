#!/usr/bin/env bash
# Installs the Debian programs the lab drives for real (Redis server, and for tests the
# browser, nginx, wrk and a Compose implementation) when they are missing.
# Usage: ensure-system-packages.sh run|test
set -euo pipefail
purpose="${1:-run}"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
if [ "$purpose" = test ]; then
    command -v chromium >/dev/null || need+=(chromium)
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
    command -v wrk >/dev/null || need+=(wrk)
    command -v docker-compose >/dev/null || need+=(docker-compose)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: missing system programs: ${need[*]}." >&2
    echo "       Install them with your package manager (Debian: apt-get install ${need[*]}) and run make again." >&2
    exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts a system Redis on 6379; the lab starts its own on free ports, so stop it.
if printf '%s\n' "${need[@]}" | grep -qx redis-server; then
    (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
fi
