#!/usr/bin/env bash
# The Iconify icon sets of the `icons` benchmark (`retlink data build icons`), fetched once with
# `npm pack` into $RETLINK_CACHE/npm/iconify (RETLINK_CACHE defaults to ~/.cache/retlink).
#
# The builder never downloads: it reads the folders this script leaves, one per set
# ($DEST/PREFIX/icons.json, info.json, metadata.json, package.json). Every set is pinned in
# src/retlink/data/icons/sources.txt (version and the sha512 integrity the npm registry publishes);
# a tarball whose sha512 differs is refused and nothing of it is kept. Idempotent: a set already
# unpacked at the pinned version is left alone. Needs npm (Debian: apt-get install npm) and openssl.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pins="$here/src/retlink/data/icons/sources.txt"
dest="${RETLINK_CACHE:-$HOME/.cache/retlink}/npm/iconify"
# Without npm: say so and exit 0 outside CI (the icons tests that need the real sets then skip,
# saying why); under CI=true fail, so a CI run never passes without them (like scripts/browser.sh).
if ! command -v npm >/dev/null; then
  echo "retlink: npm is needed to fetch the icon sets (apt-get install npm)" >&2
  [ -n "${CI:-}" ] && exit 1
  exit 0
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
while read -r prefix ver licence integrity; do
  case "$prefix" in ''|'#'*) continue ;; esac
  if [ -f "$dest/$prefix/package.json" ] && grep -q "\"version\": \"$ver\"" "$dest/$prefix/package.json" &&
     [ "$(cat "$dest/$prefix/.integrity" 2>/dev/null)" = "$integrity" ]; then
    continue
  fi
  echo "retlink: fetching @iconify-json/$prefix@$ver ($licence)" >&2
  (cd "$tmp" && npm pack --silent "@iconify-json/$prefix@$ver" >/dev/null)
  tgz="$tmp/iconify-json-$prefix-$ver.tgz"
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$integrity" ]; then
    echo "retlink: @iconify-json/$prefix@$ver: sha512 $got differs from the pinned $integrity; not kept" >&2
    status=1
    continue
  fi
  rm -rf "$dest/$prefix.new" && mkdir -p "$dest/$prefix.new"
  tar -xzf "$tgz" -C "$dest/$prefix.new" --strip-components=1 --no-same-owner
  echo "$integrity" >"$dest/$prefix.new/.integrity"
  rm -rf "$dest/$prefix" && mv "$dest/$prefix.new" "$dest/$prefix"
done <"$pins"
[ "$status" = 0 ] && echo "retlink: the icon sets are in $dest" >&2
exit "$status"
