#!/usr/bin/env bash
# Debian's Chromium and its driver for the web page's browser test (tests/server/test_web_page.py).
#
# Idempotent: nothing happens when /usr/bin/chromium and /usr/bin/chromedriver are there. Otherwise
# they are installed with apt-get (root, or sudo without a password). Never a browser download:
# the test drives this system Chromium with selenium. Without a way to install them the script
# says so and exits 0 outside CI (the test then skips, saying why); under CI=true it fails, so a
# CI run never passes without the browser test.
set -euo pipefail
have() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }
have && exit 0
if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else sudo=(none); fi
if [ "${sudo[0]:-}" != none ] && command -v apt-get >/dev/null; then
  echo "retlink: installing chromium and chromium-driver (Debian packages) for the browser test" >&2
  log=$(mktemp)
  if "${sudo[@]}" apt-get update >"$log" 2>&1 &&
     DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends chromium chromium-driver >>"$log" 2>&1; then
    rm -f "$log"
  else
    tail -n 20 "$log" >&2
  fi
fi
have && exit 0
echo "retlink: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)" >&2
[ -n "${CI:-}" ] && exit 1
exit 0
