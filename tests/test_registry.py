import pytest

from clbench.errors import ClbenchError, UnknownNameError
from clbench.registry import Registry, load_plugin_file


def test_unknown_name_lists_choices():
    registry: Registry = Registry("widget", "clbench.test_widgets")

    @registry.register("alpha", help="first")
    def alpha():
        return 1

    registry.register("beta")(lambda: 2)
    with pytest.raises(UnknownNameError) as info:
        registry.get("gamma")
    assert str(info.value) == "unknown widget 'gamma'; valid choices: alpha, beta"
    assert registry.get("alpha").factory() == 1
    assert registry.names() == ["alpha", "beta"]


def test_double_registration_is_refused():
    registry: Registry = Registry("widget", "clbench.test_widgets")
    registry.register("alpha")(lambda: 1)
    with pytest.raises(ClbenchError, match="registered twice"):
        registry.register("alpha")(lambda: 2)


def test_plugin_file_registers_a_strategy(tmp_path):
    from clbench.training import STRATEGIES

    plugin = tmp_path / "my_strategy.py"
    plugin.write_text(
        "from clbench.training import STRATEGIES\n"
        "from clbench.strategies.finetune import build_finetune\n"
        "STRATEGIES.register('my_finetune', help='a user strategy')(build_finetune)\n"
    )
    load_plugin_file(plugin)
    assert "my_finetune" in STRATEGIES
    assert STRATEGIES.get("my_finetune").help == "a user strategy"


def test_missing_plugin_file_is_a_clear_error(tmp_path):
    with pytest.raises(ClbenchError, match="not found"):
        load_plugin_file(tmp_path / "nope.py")


def test_strategy_args_reject_unknown_keys():
    from clbench.config import from_mapping
    from clbench.errors import ConfigError
    from clbench.training import STRATEGIES

    expected = "unknown key 'mem'; valid keys: memory_update, purify, replay_forward, task_balanced"
    with pytest.raises(ConfigError, match=expected):
        from_mapping(STRATEGIES.get("er").args, {"mem": 3}, "strategy er")


def test_builtin_strategies_declare_traits():
    from clbench.training import STRATEGIES

    assert STRATEGIES.get("er").traits["uses_buffer"] is True
    assert STRATEGIES.get("joint").traits["trains_jointly"] is True
    assert not STRATEGIES.get("finetune").traits.get("uses_buffer", False)


def test_a_new_file_in_the_builtin_package_is_discovered(tmp_path, monkeypatch):
    package = tmp_path / "demo_builtins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "registry_of.py").write_text(
        "from clbench.registry import Registry\n"
        "TOOLS = Registry('tool', 'demo.tools', builtin_package='demo_builtins')\n"
    )
    (package / "hammer.py").write_text(
        "from demo_builtins.registry_of import TOOLS\n@TOOLS.register('hammer')\ndef build(): return 'hammer'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from demo_builtins.registry_of import TOOLS  # type: ignore[import-not-found]

    assert TOOLS.names() == ["hammer"]
    assert TOOLS.get("hammer").factory() == "hammer"


def test_every_strategy_module_is_found_without_a_list():
    from clbench.registry import package_modules
    from clbench.training import STRATEGIES

    modules = package_modules("clbench.strategies")
    assert "clbench.strategies.er" in modules and "clbench.strategies.metasp" in modules
    assert {"er", "mir", "metasp", "metasp_rehsel"} <= set(STRATEGIES.names())
