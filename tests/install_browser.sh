#!/usr/bin/env bash
# The report test renders alignkit's HTML report in a real headless browser. This installs one when
# none is present (Debian/Ubuntu packages, as root or with passwordless sudo). Where it cannot, it says
# so and carries on: that one test then skips (outside CI, where it fails instead).
for browser in chromium-headless-shell chromium chromium-browser google-chrome; do
  command -v "$browser" >/dev/null 2>&1 && exit 0
done
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
  if $sudo apt-get update -qq >/dev/null 2>&1 &&
     { $sudo apt-get install -y -qq chromium-headless-shell >/dev/null 2>&1 || $sudo apt-get install -y -qq chromium >/dev/null 2>&1; }; then
    exit 0
  fi
fi
echo "note: no headless browser found or installable; the report-rendering test will skip (install chromium to run it)" >&2
exit 0
