#!/usr/bin/env bash
# Run the behaviour-check grid into OUT, or compare two such folders (see behaviour_check.yaml).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [[ "${1:-}" == "--compare" ]]; then
  exec "$repo/.venv/bin/python" - "$2" "$3" <<'PY'
import json, sys
from pathlib import Path
VOLATILE = {"train_seconds", "eval_seconds", "environment", "started_at", "finished_at"}
a, b = (Path(p) for p in sys.argv[1:3])
names = sorted({p.name for p in a.glob("*.json")} | {p.name for p in b.glob("*.json")})
differ = 0
for name in names:
    left, right = ((d / name) for d in (a, b))
    if not (left.is_file() and right.is_file()):
        print(f"only in one folder: {name}"); differ += 1; continue
    l, r = (json.loads(p.read_text()) for p in (left, right))
    keys = sorted((set(l) | set(r)) - VOLATILE)
    changed = [k for k in keys if l.get(k) != r.get(k)]
    if changed:
        print(f"{name}: {', '.join(changed)}"); differ += 1
print(f"{differ} of {len(names)} results differ")
sys.exit(1 if differ else 0)
PY
fi
out="${1:?usage: behaviour_check.sh OUT [--set KEY=VALUE ...] | --compare A B}"
shift
OMP_NUM_THREADS=1 "$repo/.venv/bin/clbench" run "$repo/tools/behaviour_check.yaml" --out "$out" --no-progress "$@"
