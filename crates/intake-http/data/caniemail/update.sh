#!/usr/bin/env bash
# The caniemail data the Mailpit HTML check reads (html_check.rs includes caniemail.json at
# build time), taken unchanged from the npm package `caniemail` (MIT, its LICENSE beside it)
# at the version in VERSION. `update.sh` refreshes the two files from that version (change
# VERSION first to move on); `update.sh --check` fails when they differ from the package.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(cat "$here/VERSION")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "caniemail@$version" >/dev/null && tar xzf "caniemail-$version.tgz")
if [ "${1:-}" = "--check" ]; then
  cmp "$tmp/package/data/caniemail.json" "$here/caniemail.json"
  cmp "$tmp/package/LICENSE" "$here/LICENSE"
  echo "caniemail data: the npm package caniemail@$version, unchanged"
else
  cp "$tmp/package/data/caniemail.json" "$tmp/package/LICENSE" "$here/"
  echo "caniemail data: copied from the npm package caniemail@$version"
fi
