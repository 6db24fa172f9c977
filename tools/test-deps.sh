#!/usr/bin/env bash
# Installs the Debian tools the Python test suite drives as real programs:
#   strace   - fault injection (`strace -e inject=...`) and file-access audits
#   spin     - checks the Promela models of the ring and group protocols
#   faketime - wall-clock jumps (libfaketime) for the time-safety tests
# Only what is missing is installed; needs root (or sudo) and apt-get. On a
# machine without them it says so and the tests that need a tool skip
# (outside CI) or fail (CI=true), see tests/helpers/tools.py.
set -euo pipefail
want=()
command -v strace > /dev/null || want+=(strace)
command -v spin > /dev/null || want+=(spin)
command -v faketime > /dev/null || want+=(faketime libfaketime)
[ ${#want[@]} -eq 0 ] && exit 0
sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v apt-get > /dev/null || { [ -n "$sudo" ] && ! command -v sudo > /dev/null; }; then
  echo "tools/test-deps.sh: cannot install ${want[*]} (no apt-get or no root)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q "${want[@]}" > /dev/null 2>&1 || {
  $sudo apt-get update -q > /dev/null
  $sudo apt-get install -y -q "${want[@]}" > /dev/null
}
echo "tools/test-deps.sh: installed ${want[*]}"
