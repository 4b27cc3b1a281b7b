#!/usr/bin/env bash
# Installs Debian's `chromium` for the browser tests (tests/browser), only where it is missing.
# Idempotent; never fails the build: where Chromium cannot be had the browser tests skip and say why.
# Playwright's Python package (the `test` extra) drives this Chromium; no browser is downloaded.
set -u
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ -n "${ICEPROD_CHROMIUM:-}" ] && [ -x "${ICEPROD_CHROMIUM}" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no apt-get here; tests/browser will be skipped (set ICEPROD_CHROMIUM to a Chromium binary)." >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install_browser: not root and no sudo; tests/browser will be skipped (apt-get install chromium)." >&2
    exit 0
  fi
fi
echo "install_browser: installing Debian's chromium for tests/browser ..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium; } >/tmp/install_browser.log 2>&1; then
  echo "install_browser: apt-get install chromium failed (see /tmp/install_browser.log); tests/browser will be skipped." >&2
fi
exit 0
