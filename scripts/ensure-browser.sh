#!/usr/bin/env bash
# The browser test (tests/e2e/test_ui_browser.py) drives Debian's chromium through its
# chromedriver. Install both when missing (needs root and Debian's package archive); nothing is
# downloaded at test time. Without them the browser test is skipped with a message.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium and chromium-driver for the browser test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
else
  echo "chromium/chromedriver missing: 'apt-get install chromium chromium-driver' as root to run the browser test" >&2
fi
