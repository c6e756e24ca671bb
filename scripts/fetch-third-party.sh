#!/usr/bin/env bash
# Fetches the real open-source C++ libraries the tests reload, unmodified, as Debian source
# packages, into third-party/ (ignored by git). Safe to run again: it fetches nothing that is
# already there. Needs root (it adds a deb-src line and may install dpkg-dev) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

# package:version-of-the-unpacked-folder
LIBRARIES=(box2d:2.4.1)

missing=()
for library in "${LIBRARIES[@]}"; do
    name=${library%%:*}
    version=${library##*:}
    [ -d "third-party/$name-$version/src" ] || missing+=("$name")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "fetch-third-party: missing ${missing[*]}; run this script as root once" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # The same mirror and suite as the binary packages.
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$codename" > /etc/apt/sources.list.d/rehydrate-sources.sources
fi
apt-get update -qq
command -v dpkg-source >/dev/null 2>&1 || apt-get install -y -qq dpkg-dev >/dev/null

mkdir -p third-party
cd third-party
for name in "${missing[@]}"; do
    echo "fetch-third-party: fetching the Debian source package $name" >&2
    apt-get source -qq "$name" >/dev/null 2>&1 || apt-get source "$name"
done
echo "fetch-third-party: done" >&2
