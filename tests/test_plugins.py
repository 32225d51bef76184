"""The plugin system: built-ins, registries, and third-party entry points (no pip needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toy_plugin
from conftest import backbone_distributions, make_distribution, toy_recipe

import facedapt
from facedapt.engine.run import Runner
from facedapt.errors import PluginError, RecipeError
from facedapt.hookspecs import FAMILIES
from facedapt.plugin_manager import (
    ALLOW_ENV,
    AUTOLOAD_ENV,
    BUILTIN_PLUGINS,
    ESSENTIAL_PLUGINS,
    TRACE_ENV,
    command_line_block,
    get_plugins,
    load_plugins,
)
from facedapt.recipe.schema import Component, EvalConfig, Recipe
from facedapt.recipe.validate import validate
from facedapt.registry import Origin, Registry

THIRD_PARTY = """
    from torch import nn

    from facedapt import hookimpl


    class TinyCNN(nn.Module):
        def __init__(self, in_channels, image_size, width=4):
            super().__init__()
            self.out_features = width
            self.net = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            return self.net(x)


    @hookimpl
    def facedapt_register_backbones(registry):
        registry.register("tiny_cnn", TinyCNN)
"""

BROKEN = """
    raise ImportError("needs libfoo")
"""

BROKEN_NAMES = """
    from facedapt import hookimpl

    @hookimpl
    def facedapt_register_backbones(registry):
        registry.register("broken_net", object)
"""


@pytest.fixture
def thirdparty(site: Path) -> Path:
    return make_distribution(site, "fd_thirdparty", "0.1", "fd_thirdparty", THIRD_PARTY, {"thirdparty": "fd_thirdparty"})


# -- built-ins and the registry -------------------------------------------------------------
@pytest.mark.parametrize(("family", "names"), [
    ("backbones", {"convnet", "resnet18", "ir50"}),
    ("heads", {"mlp", "linear"}),
    ("methods", {"pada", "source_only", "adabn", "dann", "cdan", "target_supervised"}),
    ("datasets", {"synthetic", "manifest"}),
    ("protocols", {"personalized"}),
    ("augmentations", {"flip"}),
    ("metrics", {"accuracy", "uar", "macro_f1"}),
])
def test_builtins_registered_by_facedapt(family: str, names: set[str]) -> None:
    registry = get_plugins().registry(family)
    assert names <= set(registry.names())
    for name in names:
        origin = registry.entry(name).origin
        assert origin.distribution == "facedapt" and origin.version == facedapt.__version__
        assert origin.plugin in BUILTIN_PLUGINS


def test_every_family_has_a_registry_and_builtins_are_registered_plugins() -> None:
    plugins = get_plugins()
    assert set(plugins.registries) == set(FAMILIES)
    for module in BUILTIN_PLUGINS:
        assert plugins.pm.get_plugin(module) is not None
    assert plugins.distributions()["facedapt"] == facedapt.__version__
    assert plugins.failed == []


def test_get_plugins_is_cached_unless_blocking() -> None:
    assert get_plugins() is get_plugins()
    blocked = get_plugins(["facedapt_plugins.augmentations"])
    assert blocked is not get_plugins()
    assert blocked.registry("augmentations").names() == []


def test_register_as_decorator_and_plainly() -> None:
    registry = Registry("backbones")

    @registry.register("deco")
    def deco(width: int = 1) -> int:
        return width

    registry.register("plain", lambda: 2)
    assert deco(width=3) == 3  # the decorator returns the function unchanged
    assert registry.names() == ["deco", "plain"]
    assert registry.get("deco") is deco
    assert "plain" in registry and "other" not in registry


def test_register_rejects_non_callable() -> None:
    with pytest.raises(PluginError, match="not callable"):
        Registry("heads").register("x", 3)


def test_name_registered_twice_names_both_distributions() -> None:
    registry = Registry("backbones")
    registry.origin = Origin("pkg_a.plugin", "dist-a", "1.0")
    registry.register("net", lambda: 1)
    registry.origin = Origin("pkg_b.plugin", "dist-b", "2.0")
    with pytest.raises(PluginError, match="registered twice") as info:
        registry.register("net", lambda: 2)
    assert "dist-a" in str(info.value) and "dist-b" in str(info.value)


def test_third_party_clash_with_builtin_names_both(site: Path) -> None:
    source = """
        from facedapt import hookimpl

        @hookimpl
        def facedapt_register_backbones(registry):
            registry.register("convnet", object)
    """
    make_distribution(site, "fd_clash", "3.1", "fd_clash", source, {"clash": "fd_clash"})
    with pytest.raises(PluginError, match="'convnet' registered twice") as info:
        load_plugins()
    assert "facedapt" in str(info.value).replace("fd_clash", "") and "fd_clash" in str(info.value)


def test_unknown_name_lookup() -> None:
    with pytest.raises(RecipeError, match="did you mean convnet"):
        get_plugins().registry("backbones").entry("convnt", key="model.backbone.name")


# -- third-party entry points ---------------------------------------------------------------
def test_third_party_plugin_is_discovered(thirdparty: Path) -> None:
    plugins = load_plugins()
    entry = plugins.registry("backbones").entry("tiny_cnn")
    assert entry.origin == Origin("thirdparty", "fd_thirdparty", "0.1")
    assert plugins.distributions()["fd_thirdparty"] == "0.1"
    assert plugins.pm.get_plugin("thirdparty") is not None
    net = entry.factory(in_channels=1, image_size=16, width=5)
    assert net.out_features == 5


def test_third_party_backbone_runs_end_to_end(thirdparty: Path, tmp_path: Path) -> None:
    plugins = load_plugins(extra=[toy_plugin])
    loaded = toy_recipe("model.backbone.name=tiny_cnn", "train.source_steps=2", "train.steps=2",
                        "data.target_subjects=[T00]")
    assert loaded.recipe.model["backbone"].name == "tiny_cnn"
    run_dir = tmp_path / "run"
    results = Runner(loaded, run_dir=run_dir, plugins=plugins).execute()
    assert set(results["per_subject"]) == {"T00"}
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["versions"]["plugin:fd_thirdparty"] == "0.1"
    assert env["plugins"]["thirdparty"] == {"plugin": "thirdparty", "distribution": "fd_thirdparty", "version": "0.1"}


def test_autoload_can_be_disabled(thirdparty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    plugins = load_plugins()
    assert "tiny_cnn" not in plugins.registry("backbones")
    assert "convnet" in plugins.registry("backbones")  # built-ins are always there
    assert "fd_thirdparty" not in plugins.distributions()


def test_block_skips_an_entry_point(thirdparty: Path) -> None:
    plugins = load_plugins(block=["thirdparty"])
    assert "tiny_cnn" not in plugins.registry("backbones")
    assert plugins.pm.get_plugin("thirdparty") is None
    assert "tiny_cnn" in load_plugins().registry("backbones")


def test_recipe_block_list_is_honoured(thirdparty: Path) -> None:
    loaded = toy_recipe("model.backbone.name=tiny_cnn", "plugins.block=[thirdparty]")
    with pytest.raises(RecipeError, match="unknown backbone 'tiny_cnn'"):
        validate(loaded, load_plugins(block=loaded.recipe.plugins.block, extra=[toy_plugin]))
    validate(toy_recipe("model.backbone.name=tiny_cnn"), load_plugins(extra=[toy_plugin]))


def test_failing_plugin_is_reported_and_skipped(thirdparty: Path, site: Path) -> None:
    make_distribution(site, "fd_broken", "0.2", "fd_broken", BROKEN, {"broken": "fd_broken"})
    plugins = load_plugins()
    assert [(f.name, f.distribution) for f in plugins.failed] == [("broken", "fd_broken")]
    assert "ImportError" in plugins.failed[0].error and "needs libfoo" in plugins.failed[0].error
    assert "tiny_cnn" in plugins.registry("backbones")  # the others still load
    assert "convnet" in plugins.registry("backbones")
    # A recipe that does not use the broken plugin is fine ...
    validate(toy_recipe("model.backbone.name=tiny_cnn"), load_plugins(extra=[toy_plugin]))
    # ... one that needs a name it would have registered fails, with the failure in the message.
    with pytest.raises(RecipeError) as info:
        validate(toy_recipe("model.backbone.name=broken_net"), load_plugins(extra=[toy_plugin]))
    message = str(info.value)
    assert "model.backbone.name" in message and "unknown backbone 'broken_net'" in message
    assert "failed to load: broken (ImportError: needs libfoo)" in message


def test_failing_plugin_can_be_blocked(site: Path) -> None:
    make_distribution(site, "fd_broken", "0.2", "fd_broken", BROKEN, {"broken": "fd_broken"})
    assert load_plugins(block=["broken"]).failed == []


def test_lifecycle_hooks_of_third_party_are_called(site: Path, tmp_path: Path) -> None:
    source = """
        from facedapt import hookimpl

        calls = []

        @hookimpl
        def facedapt_on_run_start(run):
            calls.append(("start", str(run.run_dir)))

        @hookimpl
        def facedapt_on_step_end(run, step, metrics):
            calls.append((run.phase, step, metrics["phase"]))

        @hookimpl
        def facedapt_on_eval_end(run, results):
            calls.append(("eval", run.target, "accuracy" in results))

        @hookimpl
        def facedapt_on_run_end(run, results):
            calls.append(("end", results["method"]))
    """
    make_distribution(site, "fd_hooks", "1.0", "fd_hooks", source, {"hooks": "fd_hooks"})
    plugins = load_plugins(extra=[toy_plugin])
    run_dir = tmp_path / "run"
    Runner(toy_recipe("train.source_steps=2", "train.steps=2", "train.log_every=1", "data.target_subjects=[T00]"),
           run_dir=run_dir, plugins=plugins).execute()
    import fd_hooks

    assert fd_hooks.calls == [("start", str(run_dir)), ("source", 1, "source"), ("source", 2, "source"),
                              ("adapt", 1, "adapt"), ("adapt", 2, "adapt"), ("eval", "T00", True), ("end", "pada")]


@pytest.mark.parametrize(("source", "error"), [
    ("@hookimpl\ndef facedapt_register_backbone(registry):\n    registry.register('typo_net', object)\n",
     "PluginError: unknown hook 'facedapt_register_backbone'"),
    ("@hookimpl\ndef facedapt_register_backbones(reg, extra):\n    reg.register('typo_net', object)\n",
     "PluginValidationError"),
])
def test_plugin_with_bad_hooks_is_reported_and_skipped(source: str, error: str, site: Path) -> None:
    make_distribution(site, "fd_typo", "0.4", "fd_typo", "from facedapt import hookimpl\n" + source, {"typo": "fd_typo"})
    plugins = load_plugins()
    assert [f.name for f in plugins.failed] == ["typo"] and error in plugins.failed[0].error
    assert plugins.pm.get_plugin("typo") is None
    assert "typo_net" not in plugins.registry("backbones") and "convnet" in plugins.registry("backbones")


# -- essential built-ins, the command-line block, allow-list and tracing ----------------------
def _default_components(cls: type = Recipe) -> list[str]:
    """Registered names (not dotted paths) that the schema's default components name, at any depth."""
    import typing

    import attrs

    hints = typing.get_type_hints(cls)
    names = []
    for field in attrs.fields(cls):
        default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default  # type: ignore[arg-type]
        if isinstance(default, Component) and "." not in default.name:
            names.append(default.name)
        if attrs.has(hints[field.name]) and hints[field.name] is not Component:
            names.extend(_default_components(hints[field.name]))
    return names


def test_essential_plugins_are_those_the_defaults_name() -> None:
    named = {*_default_components(), *EvalConfig().metrics}  # metrics are named by plain strings
    assert {"personalized", "accuracy", "uar", "macro_f1"} <= named
    plugins = get_plugins()
    providers = {e.origin.plugin for fam in FAMILIES for e in plugins.registry(fam) if e.name in named}
    # ... plus the one that acts on a default switch rather than a name: eval.report (on by default).
    assert EvalConfig().report
    assert providers | {"facedapt_plugins.report"} == set(ESSENTIAL_PLUGINS)  # and nothing more is essential


@pytest.mark.parametrize("name", ["metrics", "facedapt_plugins.protocols", "report"])
def test_essential_plugins_cannot_be_blocked(name: str) -> None:
    with pytest.raises(PluginError, match=f"plugins.block: '{name}': the built-in plugin .* is essential"):
        load_plugins(block=[name])
    with pytest.raises(PluginError, match=f"-p no:{name}: .* cannot be blocked"):
        with command_line_block([name]):
            pass


def test_command_line_block_adds_to_every_load_and_is_lifted(thirdparty: Path) -> None:
    with command_line_block(["thirdparty", "augmentations"]):
        for plugins in (get_plugins(), get_plugins(["heads"]), load_plugins(extra=[toy_plugin])):
            assert "tiny_cnn" not in plugins.registry("backbones")
            assert plugins.registry("augmentations").names() == []
        assert get_plugins(["heads"]).registry("heads").names() == []  # the recipe's own list still counts
    plugins = get_plugins()
    assert "tiny_cnn" in plugins.registry("backbones") and plugins.registry("augmentations").names()


@pytest.fixture
def two_plugins(site: Path) -> Path:
    backbone_distributions(site, "alpha", "beta")
    return site


def _third_party_backbones(plugins) -> set[str]:  # noqa: ANN001 - a Plugins
    return {e.name for e in plugins.registry("backbones") if e.origin.distribution != "facedapt"}


@pytest.mark.parametrize(("allow", "autoload_off", "expected"), [
    (None, False, {"alpha_net", "beta_net"}),
    ("alpha", False, {"alpha_net"}),
    (" beta , ", False, {"beta_net"}),
    ("", False, set()),  # set but empty: no third-party plugin
    ("alpha", True, {"alpha_net"}),  # naming a plugin loads it even with autoloading off
    ("alpha,beta", False, {"alpha_net", "beta_net"}),
])
def test_allow_list_loads_only_the_named(allow: str | None, autoload_off: bool, expected: set[str], two_plugins: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if allow is not None:
        monkeypatch.setenv(ALLOW_ENV, allow)
    if autoload_off:
        monkeypatch.setenv(AUTOLOAD_ENV, "1")
    plugins = load_plugins()
    assert _third_party_backbones(plugins) == expected
    assert "convnet" in plugins.registry("backbones") and plugins.failed == []


def test_allow_list_and_block_and_missing_names(two_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_ENV, "alpha,beta,gamma")
    plugins = load_plugins(block=["beta"])
    assert _third_party_backbones(plugins) == {"alpha_net"}  # blocking wins over allowing
    assert [(f.name, f.distribution) for f in plugins.failed] == [("gamma", "<not installed>")]
    assert ALLOW_ENV in plugins.failed[0].error


def test_tracing_shows_every_registration(thirdparty: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    load_plugins()
    assert capsys.readouterr().err == ""  # silent unless switched on
    monkeypatch.setenv(TRACE_ENV, "1")
    plugins = load_plugins(block=["augmentations"])
    err = capsys.readouterr().err
    assert "built-in facedapt_plugins.backbones [load]" in err
    assert "skip facedapt_plugins.augmentations (blocked) [load]" in err
    assert "entry point thirdparty (fd_thirdparty 0.1) [load]" in err
    # Each plugin's registration is its own traced hook call, showing the names it registers.
    assert "facedapt_register_backbones [hook]" in err
    assert "registry: <Registry backbones for thirdparty (fd_thirdparty)>" in err
    assert "register backbones tiny_cnn by thirdparty (fd_thirdparty) [registry]" in err
    for family in FAMILIES:
        for entry in plugins.registry(family):
            assert f"register {family} {entry.name} by {entry.origin.plugin} " in err
    # Lifecycle hooks go through the same manager: traced too.
    plugins.hook.facedapt_on_run_end(run=None, results={})
    assert "facedapt_on_run_end [hook]" in capsys.readouterr().err


def test_registration_goes_through_hook_call_monitoring(monkeypatch: pytest.MonkeyPatch) -> None:
    import pluggy

    calls: list[tuple[str, list[str]]] = []
    original = pluggy.PluginManager.check_pending

    def monitor_after_check(self: pluggy.PluginManager) -> None:  # installed just before registrations
        original(self)
        self.add_hookcall_monitoring(lambda name, impls, kwargs: calls.append((name, [i.plugin_name for i in impls])),
                                     lambda *args: None)

    monkeypatch.setattr(pluggy.PluginManager, "check_pending", monitor_after_check)
    plugins = load_plugins(extra=[toy_plugin])
    assert ("facedapt_register_backbones", ["facedapt_plugins.backbones"]) in calls
    assert ("facedapt_register_datasets", ["toy_plugin"]) in calls
    registering = {impl.plugin_name for name in (f"facedapt_register_{f}" for f in FAMILIES)
                   for impl in getattr(plugins.hook, name).get_hookimpls()}
    assert {p for _, impls in calls for p in impls} == registering  # one monitored call per plugin
    assert all(len(impls) == 1 for _, impls in calls)
