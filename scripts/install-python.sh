#!/usr/bin/env bash
# Makes `import calq` work for the current user: writes a calq.pth into the user site-packages of
# Debian's python3 (and of the `python3` first in PATH, when that is another interpreter) pointing
# at the build's package folder, <build>/python. Run after the build (scripts/test.sh or
# scripts/quickstart.sh build it).
# Usage: scripts/install-python.sh [BUILD_DIR]   (default: build/ beside this script's folder)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
if [[ ! -f "$build/python/calq/__init__.py" ]] || ! ls "$build"/python/calq/_calq*.so >/dev/null 2>&1; then
  echo "install-python: $build/python/calq has no built module; build first (scripts/test.sh)" >&2
  exit 1
fi
for py in /usr/bin/python3 "$(command -v python3)"; do
  [[ -x "$py" ]] || continue
  # Exit status 1-3: user site-packages disabled for this interpreter; say so and go on.
  if ! site="$("$py" -m site --user-site)" || [[ -z "$site" ]]; then
    echo "install-python: $py has no user site-packages; use PYTHONPATH=$build/python" >&2
    continue
  fi
  mkdir -p "$site"
  echo "$build/python" > "$site/calq.pth"
  echo "install-python: $site/calq.pth -> $build/python ($py)"
done
