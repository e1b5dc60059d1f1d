"""`clbench list` and a config's name / key errors answer from the registry manifest, without torch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clbench import registry_manifest
from clbench.errors import ConfigError, UnknownNameError

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
from clbench.cli import main
code = main(sys.argv[1:])
print("IMPORTED:", sorted(m for m in ("torch", "avalanche") if m in sys.modules), "EXIT:", code)
"""


def _fresh(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache folder after one fresh `clbench list --args` (which builds the manifest), and its output."""
    cache = tmp_path_factory.mktemp("cache")
    return cache, _fresh(cache, "list", "--args")


def test_a_second_list_reads_the_manifest_and_imports_neither_torch_nor_avalanche(warm_cache):
    cache, first = warm_cache
    assert "IMPORTED: ['avalanche', 'torch'] EXIT: 0" in first.stdout  # the first one builds the manifest
    assert len(list((cache / "clbench").glob("registries-*.json"))) == 1
    second = _fresh(cache, "list", "--args")
    assert "IMPORTED: [] EXIT: 0" in second.stdout
    assert second.stdout.replace("IMPORTED: []", "") == first.stdout.replace("IMPORTED: ['avalanche', 'torch']", "")
    assert "  er_ace " in second.stdout and "      alpha = 0.1" in second.stdout  # entries and their arguments


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategies=[erx]", "clbench: error: unknown strategy 'erx'; valid choices: agem, der, er, er_ace,"),
        ("strategies=[{name: er, args: {foo: 1}}]", "clbench: error: strategy er: unknown key 'foo'; valid keys:"),
        ("backbone={name: resnet19}", "clbench: error: unknown backbone 'resnet19'; valid choices:"),
    ],
)
def test_a_misspelt_name_or_key_is_reported_without_importing_torch(warm_cache, override, message):
    failed = _fresh(warm_cache[0], "run", str(ROOT / "experiments" / "quick.yaml"), "--dry-run", "--set", override)
    assert "IMPORTED: [] EXIT: 2" in failed.stdout
    assert failed.stderr.startswith(message)
    assert len(failed.stderr.strip().splitlines()) == 1


def test_the_fingerprint_follows_the_sources(tmp_path, monkeypatch):
    package = tmp_path / "fingerprinted"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "component.py"
    module.write_text("A = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_manifest, "SOURCE_PACKAGES", ("fingerprinted",))
    before = registry_manifest.fingerprint()
    assert registry_manifest.fingerprint() == before
    module.write_text("A = 22\n")  # another size
    assert registry_manifest.fingerprint() != before


def test_a_process_with_its_own_registrations_describes_them_and_writes_no_manifest(tmp_path, monkeypatch):
    from clbench.strategies.finetune import build_finetune
    from clbench.training import STRATEGIES

    STRATEGIES.register("manifest_probe", help="registered by this test only")(build_finetune)
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        manifest = registry_manifest.load_manifest()
    finally:
        STRATEGIES._entries.pop("manifest_probe")
    assert manifest["strategies"]["entries"]["manifest_probe"]["help"] == "registered by this test only"
    assert not list(tmp_path.rglob("*.json"))


def test_the_manifest_checks_names_and_keys_with_the_registries_messages():
    from clbench.config import experiment_from_mapping

    manifest = registry_manifest.build_manifest()
    good = experiment_from_mapping({"name": "g", "benchmarks": ["synthetic"], "strategies": ["er", "mir"]})
    registry_manifest.check_components(manifest, good)
    unknown = experiment_from_mapping({"name": "g", "benchmarks": ["synthetc"], "strategies": ["er"]})
    with pytest.raises(UnknownNameError, match="unknown benchmark 'synthetc'; valid choices: "):
        registry_manifest.check_components(manifest, unknown)
    keyed = experiment_from_mapping(
        {"name": "g", "benchmarks": [{"name": "synthetic", "args": {"taks": 3}}], "strategies": ["er"]}
    )
    with pytest.raises(ConfigError, match="benchmark synthetic: unknown key 'taks'; valid keys: "):
        registry_manifest.check_components(manifest, keyed)
