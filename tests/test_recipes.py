"""Recipes: extends, deep merge, overrides, schema errors and whole-recipe validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PADA, write_recipe

from facedapt.errors import RecipeError
from facedapt.plugin_manager import get_plugins
from facedapt.recipe.load import apply_overrides, bundled_recipes, load_recipe, merge
from facedapt.recipe.schema import Component
from facedapt.recipe.validate import validate

BASE = """
    seed: 3
    data:
      dataset: {name: synthetic, preset: default}
      target_subjects: {first: 2}
    model:
      backbone: {name: convnet, width: 32, dropout: 0.1}
    method: {name: pada, adv_weight: 0.2}
    train: {source_steps: 10, steps: 5, batch_size: 8}
"""


def _raises(path, overrides=(), match: str = "") -> RecipeError:
    with pytest.raises(RecipeError, match=match) as info:
        load_recipe(path, list(overrides))
    return info.value


def _invalid(overrides, match: str, path=PADA) -> str:
    loaded = load_recipe(path, list(overrides))
    with pytest.raises(RecipeError, match=match) as info:
        validate(loaded, get_plugins())
    return str(info.value)


# -- extends and merge ------------------------------------------------------------------
def test_extends_relative_file_with_deep_merge(tmp_path: Path) -> None:
    write_recipe(tmp_path / "base.yaml", BASE)
    child = write_recipe(tmp_path / "sub" / "child.yaml", """
        extends: ../base.yaml
        model:
          backbone: {width: 16}
        train: {steps: 9}
    """)
    loaded = load_recipe(child)
    r = loaded.recipe
    assert r.seed == 3 and r.train.steps == 9 and r.train.batch_size == 8
    assert r.model["backbone"] == Component("convnet", {"width": 16, "dropout": 0.1})
    assert r.name == "child"
    assert "extends" not in loaded.resolved


def test_changed_component_name_drops_old_arguments(tmp_path: Path) -> None:
    write_recipe(tmp_path / "base.yaml", BASE)
    child = write_recipe(tmp_path / "child.yaml", """
        extends: base.yaml
        model:
          backbone: {name: resnet18}
        method: {name: dann}
    """)
    r = load_recipe(child).recipe
    assert r.model["backbone"] == Component("resnet18")
    assert r.method == Component("dann")


def test_extends_bundled_recipe_by_name(tmp_path: Path) -> None:
    child = write_recipe(tmp_path / "mine.yaml", "extends: pada\ntrain: {steps: 3}\n")
    r = load_recipe(child).recipe
    pada = load_recipe("pada").recipe
    assert r.train.steps == 3
    assert r.train.source_steps == pada.train.source_steps
    assert r.method == pada.method and r.model == pada.model


def test_bundled_recipe_by_name() -> None:
    assert load_recipe("pada").path == load_recipe("pada.yaml").path == str(bundled_recipes()["pada"])


def test_merge_replaces_lists_and_scalars() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": {"name": "x", "k": 1}}
    out = merge(base, {"a": {"c": [3]}, "d": {"k": 2}})
    assert out == {"a": {"b": 1, "c": [3]}, "d": {"name": "x", "k": 2}}
    assert base["a"]["c"] == [1, 2]  # inputs are not modified


# -- overrides --------------------------------------------------------------------------
def test_overrides_set_list_delete_and_string_component() -> None:
    loaded = load_recipe(PADA, [
        "train.steps=7",
        "data.target_subjects=[3, 7]",
        "~data.augment",
        "model.backbone=convnet",
        "model.backbone.width=8",
        "train.grad_clip=null",
    ])
    r = loaded.recipe
    assert r.train.steps == 7
    assert r.data.target_subjects == [3, 7]
    assert r.data.augment == []
    assert "augment" not in loaded.resolved["data"]
    assert r.model["backbone"] == Component("convnet", {"width": 8})
    assert r.train.grad_clip is None


def test_override_creates_missing_sections() -> None:
    r = load_recipe(PADA, ["train.scheduler={name: torch.optim.lr_scheduler.StepLR, step_size: 2}",
                           "data.protocol.name=personalized"]).recipe
    assert r.train.scheduler == Component("torch.optim.lr_scheduler.StepLR", {"step_size": 2})
    assert r.data.protocol == Component("personalized")


@pytest.mark.parametrize("override", ["model.backbone.name=resnet18", "model.backbone={name: resnet18}"])
def test_override_changing_component_name_drops_old_arguments(override: str) -> None:
    assert load_recipe(PADA, [override]).recipe.model["backbone"] == Component("resnet18")


def test_override_same_component_name_keeps_arguments() -> None:
    r = load_recipe(PADA, ["model.backbone.name=convnet", "model.backbone={name: convnet, dropout: 0.5}"]).recipe
    assert r.model["backbone"] == Component("convnet", {"width": 32, "dropout": 0.5})


def test_override_recipe_name_is_a_plain_key() -> None:
    assert load_recipe(PADA, ["name=other"]).recipe.name == "other"


@pytest.mark.parametrize(("override", "match"), [
    ("train.steps", "key=value"),
    ("=3", "bad override key"),
    ("train..steps=3", "bad override key"),
    ("~model.nosuch", "model.nosuch: cannot delete"),
    ("seed.x=1", "'seed' is not a section"),
    ("train.steps=[1", "cannot parse value"),
])
def test_bad_overrides(override: str, match: str) -> None:
    err = _raises(PADA, [override], match)
    assert "command line" in str(err)


def test_apply_overrides_does_not_modify_input() -> None:
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2", "~a"]) == {}
    assert data == {"a": {"b": 1}}


# -- schema errors ----------------------------------------------------------------------
def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = write_recipe(tmp_path / "bad.yaml", "seed: 1\ntrain:\n  steps: [1, 2\n  batch_size: 3\n")
    err = _raises(bad, match="invalid YAML")
    assert str(bad) in str(err) and "line 4" in str(err)


def test_python_object_tag_is_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = write_recipe(tmp_path / "evil.yaml", f'seed: !!python/object/apply:os.system ["touch {marker}"]\n')
    err = _raises(bad, match="invalid YAML")
    assert str(bad) in str(err) and "line 1" in str(err)
    assert not marker.exists()


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_recipe_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    _raises(write_recipe(tmp_path / "r.yaml", text), match="mapping of sections")


@pytest.mark.parametrize(("override", "key", "hint"), [
    ("trian={steps: 1}", "trian", "did you mean 'train'"),
    ("train.stpes=1", "train.stpes", "did you mean 'steps'"),
    ("data.targte_subjects=all", "data.targte_subjects", "did you mean 'target_subjects'"),
    ("eval.zzz=1", "eval.zzz", "known keys: selection"),
])
def test_unknown_key_names_path_and_suggestion(override: str, key: str, hint: str) -> None:
    err = str(_raises(PADA, [override], "unknown key"))
    assert f"{PADA}: {key}: " in err and hint in err


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "r.yaml", BASE + "    evl: {selection: last}\n")
    err = str(_raises(path, match="did you mean 'eval'"))
    assert f"{path}: evl: " in err


@pytest.mark.parametrize(("override", "key", "match"), [
    ("train.steps=ten", "train.steps", "expected an integer, got 'ten'"),
    ("train.steps=true", "train.steps", "expected an integer"),
    ("train.steps=1.5", "train.steps", "expected an integer"),
    ("train.steps=0", "train.steps", "must be positive, got 0"),
    ("train.steps=-3", "train.steps", "must be positive, got -3"),
    ("train.batch_size=0", "train.batch_size", "must be positive"),
    ("train.batch_size=-1", "train.batch_size", "must be positive"),
    ("train.source_steps=-1", "train.source_steps", "must not be negative"),
    ("train.precision=fp8", "train.precision", "'fp8' is not one of auto, fp32, bf16, fp16"),
    ("eval.selection=best", "eval.selection", "is not one of last"),
    ("train.channels_last=yes please", "train.channels_last", "expected true or false"),
    ("train.grad_clip=big", "train.grad_clip", "expected a number"),
    ("data.augment={name: flip}", "data.augment", "expected a list"),
    ("data.augment=[{p: 1}]", "data.augment[0]", "needs 'name:'"),
    ("model=[convnet]", "model", "expected a mapping"),
    ("model.backbone=[1]", "model.backbone", "expected a component mapping"),
    ("train=3", "train", "expected a mapping"),
    ("~train.steps", "train.steps", "missing required key"),
])
def test_wrong_values_name_the_key(override: str, key: str, match: str) -> None:
    err = str(_raises(PADA, [override], match))
    assert f"{PADA}: {key}: " in err


def test_error_in_extended_file_names_the_child(tmp_path: Path) -> None:
    write_recipe(tmp_path / "base.yaml", BASE)
    child = write_recipe(tmp_path / "child.yaml", "extends: base.yaml\ntrain: {steps: zero}\n")
    assert f"{child}: train.steps: " in str(_raises(child, match="expected an integer"))


def test_extends_cycle(tmp_path: Path) -> None:
    write_recipe(tmp_path / "a.yaml", "extends: b.yaml\nseed: 1\n")
    write_recipe(tmp_path / "b.yaml", "extends: c.yaml\n")
    write_recipe(tmp_path / "c.yaml", "extends: a.yaml\n")
    assert "extends" in str(_raises(tmp_path / "a.yaml", match="cycle"))


def test_extends_self(tmp_path: Path) -> None:
    _raises(write_recipe(tmp_path / "a.yaml", "extends: a.yaml\n"), match="cycle")


def test_extends_missing_file(tmp_path: Path) -> None:
    child = write_recipe(tmp_path / "child.yaml", "extends: nowhere.yaml\n")
    err = str(_raises(child, match="'nowhere.yaml' not found"))
    assert f"{child}: extends: " in err


def test_extends_must_be_a_string(tmp_path: Path) -> None:
    _raises(write_recipe(tmp_path / "c.yaml", "extends: [a.yaml]\n"), match="extends: expected a file name")


def test_missing_recipe_file(tmp_path: Path) -> None:
    err = str(_raises(tmp_path / "nosuch.yaml", match="no such recipe file"))
    assert "bundled:" in err and "pada" in err.partition("bundled:")[2]


# -- validate ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_bundled_recipes_validate(name: str) -> None:
    validate(load_recipe(bundled_recipes()[name]), get_plugins())


def test_at_least_pada_is_bundled() -> None:
    assert "pada" in bundled_recipes()


@pytest.mark.parametrize(("override", "key", "suggestion"), [
    ("model.backbone.name=convnt", "model.backbone.name", "did you mean convnet"),
    ("method.name=pda", "method.name", "did you mean pada"),
    ("data.dataset.name=synthetc", "data.dataset.name", "did you mean synthetic"),
    ("data.augment=[{name: flp}]", "data.augment[0].name", "did you mean flip"),
    ("data.protocol=personalised", "data.protocol.name", "did you mean personalized"),
    ("eval.metrics=[acuracy]", "eval.metrics[0].name", "did you mean accuracy"),
])
def test_unknown_plugin_name_suggests_registered(override: str, key: str, suggestion: str) -> None:
    err = _invalid([override], "unknown")
    assert f"{PADA}: {key}: " in err and suggestion in err


def test_unknown_name_without_close_match_lists_registered() -> None:
    err = _invalid(["model.backbone.name=qqqqqqqq"], "unknown backbone 'qqqqqqqq'")
    assert "registered:" in err and "convnet" in err


def test_unknown_component_argument() -> None:
    err = _invalid(["model.backbone.widht=8"], "unexpected argument 'widht'")
    assert f"{PADA}: model.backbone.widht: " in err and "did you mean 'width'" in err


def test_unknown_method_argument() -> None:
    err = _invalid(["method.adv_wieght=1"], "unexpected argument")
    assert "method.adv_wieght" in err and "adv_weight" in err


def test_missing_required_argument() -> None:
    err = _invalid(["data.dataset={name: manifest}"], "missing required argument")
    assert f"{PADA}: data.dataset: " in err


def test_engine_arguments_need_not_be_given() -> None:
    # in_features / num_classes are supplied by the engine, not by the recipe.
    validate(load_recipe(PADA, ["model.expression_classifier=linear", "model.expression_discriminator=mlp"]),
             get_plugins())


def test_unknown_model_role() -> None:
    err = _invalid(["model.backbon=convnet"], "no model role 'backbon'")
    assert f"{PADA}: model.backbon: " in err and "backbone" in err


@pytest.mark.parametrize(("override", "key"), [
    ("train.optimizer.name=torch.optim.AdamWW", "train.optimizer.name"),
    ("train.optimizer={name: nosuchpkg.optim.Adam}", "train.optimizer.name"),
    ("train.adapt_optimizer.name=torch.optim.Nope", "train.adapt_optimizer.name"),
    ("train.scheduler=torch.optim.lr_scheduler.NoSuch", "train.scheduler.name"),
    ("train.optimizer.name=adam", "train.optimizer.name"),
])
def test_optimizer_path_that_does_not_import(override: str, key: str) -> None:
    err = _invalid([override], "cannot import|dotted")
    assert f"{PADA}: {key}: " in err


def test_optimizer_argument_is_checked() -> None:
    err = _invalid(["train.optimizer.lrr=0.1"], "unexpected argument 'lrr'")
    assert "train.optimizer.lrr" in err and "did you mean 'lr'" in err


@pytest.mark.parametrize("value", ["{first: 0}", "{first: -2}", "{first: two}", "{last: 2}", "{first: 2, last: 1}",
                                   "[]", "[true]", "[[1]]", "3", "some", "null", "{first: true}"])
def test_bad_target_subjects(value: str) -> None:
    err = _invalid([f"data.target_subjects={value}"], "expected")
    assert f"{PADA}: data.target_subjects: " in err


@pytest.mark.parametrize("value", ["all", "{first: 1}", "[S005, '7', 3]"])
def test_good_target_subjects(value: str) -> None:
    validate(load_recipe(PADA, [f"data.target_subjects={value}"]), get_plugins())


@pytest.mark.parametrize(("override", "key"), [
    ("data.target_holdout=1.0", "data.target_holdout"),
    ("data.target_holdout=-0.1", "data.target_holdout"),
    ("data.source_val=1", "data.source_val"),
    ("train.grad_clip=0", "train.grad_clip"),
    ("train.target_batch_size=0", "train.target_batch_size"),
    ("train.source_steps=0", "train.source_steps"),
])
def test_bad_ranges_in_validate(override: str, key: str) -> None:
    assert f"{PADA}: {key}: " in _invalid([override], "must|needs")


def test_exponent_numbers_are_floats_in_files_and_overrides(tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-4 (no dot in the mantissa) as a string; recipes read it as a number."""
    path = write_recipe(tmp_path / "r.yaml", "extends: pada.yaml\ntrain:\n  adapt_optimizer: {name: torch.optim.Adam, lr: 1e-4}\n")
    r = load_recipe(path, ["train.optimizer.lr=3e-05", "method.adv_weight=2E+0"]).recipe
    assert r.train.adapt_optimizer.kwargs["lr"] == 1e-4 and r.train.optimizer.kwargs["lr"] == 3e-05
    assert r.method.kwargs["adv_weight"] == 2.0
    assert load_recipe(path, ["name=1e5x"]).recipe.name == "1e5x"  # not a number: still a string
