#!/usr/bin/env bash
# mypy cannot follow setuptools' package-dir mapping (strategies/ -> clbench.strategies),
# so check a copy of the package laid out as it is installed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
cp -r "$repo/clbench" "$tree/clbench"
cp -r "$repo/strategies" "$tree/clbench/strategies"
cp -r "$repo/datasets" "$tree/clbench/datasets"
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
cd "$tree"
# Every Python the README promises (>= 3.10), checked against the installed packages.
status=0
for version in 3.10 3.11 3.12; do
  echo "mypy, Python $version:"
  mypy --config-file "$repo/pyproject.toml" --python-version "$version" --cache-dir "$repo/.mypy_cache" clbench \
    | sed -e "s#^clbench/strategies/#strategies/#" -e "s#^clbench/datasets/#datasets/#" || status=1
done
exit $status
