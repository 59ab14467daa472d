#!/usr/bin/env bash
# make upgrade-check: would the newest versions pyproject.toml allows pass? Resolves them into
# build/upgrade/lock.txt (requirements/lock.txt is not touched), installs that into the throwaway
# venv build/upgrade/venv (with a Prism of its Beam version), runs the unit, packaging and pipeline
# tests there and prints which packages moved and what failed. Exit 0 when every test passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=build/upgrade
venv=$out/venv
mkdir -p "$out"
echo "upgrade-check: resolving the newest versions pyproject.toml allows"
rm -f "$out/lock.txt"
bash scripts/lock.sh "$out/lock.txt" --upgrade || exit 1
moved=$(.venv/bin/python scripts/lockfile.py diff requirements/lock.txt "$out/lock.txt")
if [ -z "$moved" ]; then
  echo "upgrade-check: nothing moved: requirements/lock.txt already holds the newest versions"
else
  echo "upgrade-check: moved from requirements/lock.txt: $(printf '%s\n' "$moved" | wc -l) packages"
  printf '  %s\n' "$moved"
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
.venv/bin/uv pip sync --quiet --python "$venv/bin/python" "$out/lock.txt" || exit 1
.venv/bin/uv pip install --quiet --python "$venv/bin/python" --no-deps --no-build-isolation -e . \
  || exit 1
"$venv/bin/python" -c "from kldrift.local import prism; prism.ensure_installed()" || exit 1
echo "upgrade-check: fast tier and pipeline tests in $venv"
log=$out/pytest.log
KLDRIFT_LOCK=$out/lock.txt "$venv/bin/pytest" -m "unit or packaging or pipeline" -q \
  -p no:cacheprovider -n 2 --basetemp "$out/tmp" >"$log" 2>&1
rc=$?
summary=$(grep -E "^(FAILED|ERROR) " "$log")
last=$(tail -1 "$log")
if [ "$rc" -eq 0 ] && [ -z "$moved" ]; then
  echo "upgrade-check: PASSED ($last)"
elif [ "$rc" -eq 0 ]; then
  echo "upgrade-check: PASSED ($last): \`make lock-upgrade\` moves the lock to these versions"
else
  [ -n "$summary" ] && printf '%s\n' "$summary"
  echo "upgrade-check: FAILED ($last; full log: $log)"
fi
exit "$rc"
