"""config: YAML files plus dotted key=value overrides into nested dataclasses, with clear errors."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mentor.config import ConfigError, load_config, save_config
from mentor.train.sft import SFTConfig
from mentor.world.habits import Habits
from mentor.world.problems import WorldConfig
from mentor.world.solver import WorldModelConfig


@dataclass
class Inner:
    depth: int = 2
    rate: float = 0.5
    name: str = "inner"

    def __post_init__(self) -> None:
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")


@dataclass
class Middle:
    inner: Inner = field(default_factory=lambda: Inner(depth=7, name="from-middle"))
    flag: bool = False


@dataclass
class Small:
    count: int = 1
    ratio: float = 0.25
    label: str = "x"
    enabled: bool = True
    items: list[int] = field(default_factory=lambda: [1, 2])
    table: dict[str, float] = field(default_factory=dict)
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)
    middle: Middle = field(default_factory=Middle)


@dataclass
class Required:
    name: str
    size: int = 3


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


# ----- files, overrides and precedence ----------------------------------------------------------------


def test_no_file_no_overrides_gives_the_defaults():
    assert load_config(Small) == Small()
    assert load_config(WorldModelConfig) == WorldModelConfig()
    assert load_config(Small, None, []) == Small()


def test_yaml_file_sets_top_level_and_nested_keys(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {
        "count": 5, "label": "y", "items": [3], "inner": {"depth": 9}, "middle": {"inner": {"rate": 0.75}},
    })
    config = load_config(Small, path)
    assert config.count == 5 and config.label == "y" and config.items == [3]
    assert config.inner == Inner(depth=9)
    assert isinstance(config.middle, Middle) and isinstance(config.middle.inner, Inner)
    # a nested mapping updates that field's default (depth 7 and name from Middle's default), key by key
    assert config.middle.inner == Inner(depth=7, rate=0.75, name="from-middle")


def test_world_model_config_from_yaml_and_dotted_overrides(tmp_path):
    path = write_yaml(tmp_path / "wm.yaml", {"hidden_size": 64, "world": {"steps": 3, "modulus": 7},
                                             "sft": {"steps": 10, "batch_size": 4}})
    config = load_config(WorldModelConfig, path, ["world.modulus=11", "sft.lr=0.01", "layers=2"])
    assert isinstance(config.world, WorldConfig) and isinstance(config.sft, SFTConfig)
    assert (config.world.steps, config.world.modulus) == (3, 11)
    assert (config.sft.steps, config.sft.batch_size, config.sft.lr) == (10, 4, 0.01)
    assert (config.hidden_size, config.layers) == (64, 2)


def test_partial_nested_override_keeps_the_parent_configs_other_nested_values():
    default_sft = WorldModelConfig().sft
    assert default_sft != SFTConfig()  # WorldModelConfig chooses its own SFT defaults...
    config = load_config(WorldModelConfig, overrides=["sft.steps=7"])
    # ...and overriding one of them keeps the rest, rather than falling back to SFTConfig's class defaults
    assert config.sft == dataclasses.replace(default_sft, steps=7)
    assert config.sft.lr == default_sft.lr


def test_overrides_win_over_the_file_and_later_overrides_win(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"count": 5, "inner": {"depth": 9, "rate": 0.1}})
    config = load_config(Small, path, ["count=6", "inner.depth=10", "count=8"])
    assert config.count == 8
    assert config.inner.depth == 10
    assert config.inner.rate == 0.1  # untouched by the override, kept from the file


def test_whole_nested_mapping_as_an_override_value(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"inner": {"depth": 9, "rate": 0.1}})
    config = load_config(Small, path, ["inner={depth: 4}"])
    assert config.inner.depth == 4
    assert config.inner.rate == 0.1  # a mapping merges into the file's mapping


@pytest.mark.parametrize(
    "override, attribute, expected",
    [
        ("count=42", "count", 42),
        ("count=-3", "count", -3),
        ("ratio=0.125", "ratio", 0.125),
        ("ratio=1e-3", "ratio", 1e-3),  # YAML 1.1 reads this as a string; a float field takes it as a number
        ("ratio=2.5e-4", "ratio", 2.5e-4),
        ("ratio=3", "ratio", 3.0),
        ("label=hello world", "label", "hello world"),
        ("label='007'", "label", "007"),
        ("label=", "label", ""),
        ("label = spaced", "label", "spaced"),
        ("label=a=b", "label", "a=b"),
        ("enabled=false", "enabled", False),
        ("enabled=true", "enabled", True),
        ("enabled=False", "enabled", False),
        ("items=[4, 5, 6]", "items", [4, 5, 6]),
        ("items=[]", "items", []),
        ("table={a: 1.5, b: 2}", "table", {"a": 1.5, "b": 2}),
        ("maybe=null", "maybe", None),
        ("maybe=3", "maybe", 3),
        # YAML 1.2 floats: PyYAML alone reads these as text
        ("table={lr: 1e-4}", "table", {"lr": 1e-4}),
        ("table={a: -2E+3, b: .5e1}", "table", {"a": -2000.0, "b": 5.0}),
        ("label=1e", "label", "1e"),
    ],
)
def test_override_values_are_parsed_as_yaml(override, attribute, expected):
    value = getattr(load_config(Small, overrides=[override]), attribute)
    assert value == expected
    assert type(value) is type(expected)


def test_list_override_into_nested_dataclass_runs_its_post_init():
    config = load_config(WorldModelConfig, overrides=["world.ops=[+, '*']", "sft.lr=1e-3"])
    assert config.world.ops == ("+", "*")  # WorldConfig.__post_init__ makes it a tuple
    assert config.sft.lr == pytest.approx(1e-3) and isinstance(config.sft.lr, float)


@settings(max_examples=40, deadline=None)
@given(count=st.integers(-(10**6), 10**6), ratio=st.floats(-1e6, 1e6, allow_nan=False),
       depth=st.integers(0, 99))
def test_numeric_overrides_round_trip(count, ratio, depth):
    config = load_config(Small, overrides=[f"count={count}", f"ratio={ratio!r}", f"inner.depth={depth}"])
    assert (config.count, config.ratio, config.inner.depth) == (count, ratio, depth)


# ----- errors -----------------------------------------------------------------------------------------


def test_unknown_top_level_key_names_it_and_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(Small, overrides=["cuont=3"])
    message = str(info.value)
    assert message.startswith("unknown config key cuont; did you mean count?")
    assert "valid keys here: count, ratio, label, enabled, items, table, maybe, inner, middle" in message
    path = write_yaml(tmp_path / "c.yaml", {"world": {"steps": 3}, "hidden": 3})
    with pytest.raises(ConfigError, match=r"unknown config key hidden; did you mean hidden_size\? \(valid keys here: world, "):
        load_config(WorldModelConfig, path)
    with pytest.raises(ConfigError, match=r"^unknown config key zzz \(valid keys here"):
        load_config(Small, overrides=["zzz=1"])


def test_unknown_nested_key_names_its_path_and_the_nested_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(WorldModelConfig, overrides=["world.modulo=7"])
    message = str(info.value)
    assert message.startswith("unknown config key world.modulo; did you mean world.modulus?")
    assert "valid keys here: steps, inputs, modulus, ops, chain_prob" in message
    nested = r"unknown config key middle\.inner\.deep; did you mean middle\.inner\.depth\? \(valid keys here: depth, rate, name"
    with pytest.raises(ConfigError, match=nested):
        load_config(Small, overrides=["middle.inner.deep=1"])
    path = write_yaml(tmp_path / "c.yaml", {"sft": {"step": 5}})
    with pytest.raises(ConfigError, match=r"unknown config key sft\.step; did you mean sft\.steps\?"):
        load_config(WorldModelConfig, path)
    from mentor.train.onpolicy import OnPolicyConfig

    with pytest.raises(ConfigError, match=r"unknown config key stepz; did you mean steps\?"):
        load_config(OnPolicyConfig, overrides=["stepz=5"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("count=abc", "count"),
        ("count=1.5", "count"),
        ("count=true", "count"),
        ("ratio=fast", "ratio"),
        ("ratio=true", "ratio"),
        ("enabled=1", "enabled"),
        ("inner=3", "inner"),
        ("inner.depth=deep", "inner.depth"),
        ("sft.steps=many", "sft.steps"),
    ],
)
def test_wrong_scalar_types_are_config_errors_naming_the_key(override, key):
    cls = WorldModelConfig if override.startswith("sft") else Small
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        load_config(cls, overrides=[override])


@pytest.mark.parametrize("override", ["count", "inner.depth", ""])
def test_override_without_equals_is_an_error(override):
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(Small, overrides=[override])


def test_override_inside_a_scalar_override_is_an_error():
    with pytest.raises(ConfigError, match="non-mapping key 'count'"):
        load_config(Small, overrides=["count=3", "count.x=4"])


def test_bad_yaml_is_a_config_error_naming_the_file(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "count: [1, 2\nlabel: : :\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is not valid YAML"):
        load_config(Small, path)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_non_mapping_file_is_a_config_error(tmp_path, text):
    path = write_yaml(tmp_path / "list.yaml", text)
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load_config(Small, path)


def test_empty_file_means_defaults(tmp_path):
    assert load_config(Small, write_yaml(tmp_path / "empty.yaml", "")) == Small()
    assert load_config(Small, write_yaml(tmp_path / "comment.yaml", "# nothing\n")) == Small()


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Small, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Small, tmp_path)  # a directory is not a config file


def test_missing_required_field_is_a_config_error():
    with pytest.raises(ConfigError, match="bad config"):
        load_config(Required)
    assert load_config(Required, overrides=["name=n"]) == Required(name="n")


@pytest.mark.parametrize(
    "override, message",
    [
        ("world.modulus=1", "modulus must be in 2..100"),
        ("world.steps=0", "steps must be in 1..16"),
        ("world.ops=['/']", "ops must be a non-empty subset"),
        ("sft.batch_size=0", "batch_size must be >= 1"),
        ("sft.lr=-1e-3", "lr must be > 0"),
        ("habits.swap=1.5", "habit swap must be in"),
        ("continue_rate=2", "continue_rate must be in"),
        ("mix={none: 1, other: 1}", "mix keys"),
    ],
)
def test_values_are_validated_by_the_dataclasses_post_init(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(WorldModelConfig, overrides=[override])


def test_nested_validation_applies_to_file_values_too(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"inner": {"depth": -1}})
    with pytest.raises(ValueError, match="depth must be >= 0"):
        load_config(Small, path)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        load_config(Small, overrides=["middle.inner.depth=-1"])


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# ----- save / load round trip -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        WorldModelConfig(),
        WorldModelConfig(world=WorldConfig(steps=3, modulus=13, ops=("+",)), sft=SFTConfig(steps=9, lr=3e-4),
                         habits=Habits(swap=0.5, slip=0.0), mix={"none": 1.0}, hidden_size=48),
        Small(count=-4, ratio=1e-9, label="with: colon # and hash", enabled=False, items=[], table={"a": 0.5},
              maybe=0, inner=Inner(depth=0, rate=2.0), middle=Middle(flag=True)),
        Small(label="true", maybe=None),
        Small(label="1e-3"),
    ],
    ids=["world-default", "world-custom", "small-custom", "string-true", "string-number"],
)
def test_save_then_load_round_trips_exactly(tmp_path, config):
    path = save_config(config, tmp_path / "nested" / "dir" / "config.yaml")
    assert path.is_file()
    back = load_config(type(config), path)
    assert back == config
    assert dataclasses.asdict(back) == dataclasses.asdict(config)
    # the file is plain YAML that names every field
    assert set(yaml.safe_load(path.read_text())) == {f.name for f in dataclasses.fields(config)}


def test_loaded_world_model_config_keeps_its_cache_key(tmp_path):
    config = load_config(WorldModelConfig, overrides=["sft.steps=20", "world.modulus=17", "habits.slip=0"])
    back = load_config(WorldModelConfig, save_config(config, tmp_path / "c.yaml"))
    assert back.key() == config.key()
    assert config.key() != WorldModelConfig().key()
    # an override that repeats a default value names the same build as no override at all
    default = WorldModelConfig()
    same = [f"habits.swap={default.habits.swap}", f"sft.lr={default.sft.lr}", f"habits.skip={default.habits.skip}"]
    assert load_config(WorldModelConfig, overrides=same).key() == default.key()


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(-(10**9), 10**9),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
    label=st.text(max_size=20),
    items=st.lists(st.integers(-100, 100), max_size=4),
    depth=st.integers(0, 1000),
)
def test_random_configs_round_trip(tmp_path_factory, count, ratio, label, items, depth):
    config = Small(count=count, ratio=ratio, label=label, items=items, inner=Inner(depth=depth))
    path = save_config(config, tmp_path_factory.mktemp("cfg") / "c.yaml")
    assert load_config(Small, path) == config


def test_mapping_fields_are_updated_not_replaced():
    config = load_config(WorldModelConfig, overrides=["mix.facts=0", "mix.none=0.8"])
    default = WorldModelConfig()
    assert config.mix == {**default.mix, "facts": 0, "none": 0.8}


def test_an_empty_mapping_override_empties_the_field(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"table": {"a": 1.0}})
    assert load_config(Small, path).table == {"a": 1.0}
    assert load_config(Small, path, ["table={}"]).table == {}


def test_scientific_notation_in_a_file_is_a_number(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", "ratio: 1e-3\ntable: {lr: 3e-4}\n")
    config = load_config(Small, path)
    assert config.ratio == 1e-3 and config.table == {"lr": 3e-4}



@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["onpolicy.method=grpo"], ("grpo", 1.0, 8)),
        (["onpolicy.method=sd-success"], ("sd-success", 0.0, 8)),
        (["onpolicy.grpo_weight=0.5"], ("sd-critique", 0.5, 8)),
        (["onpolicy.method=grpo", "onpolicy.rollouts_per_prompt=4"], ("grpo", 1.0, 4)),
        (["onpolicy.method=sd-reference"], ("sd-reference", 0.0, 1)),
    ],
)
def test_derived_defaults_follow_the_overrides(tmp_path, overrides, expected):
    """`mentor train onpolicy.method=grpo` once failed: grpo_weight kept the default method's 0.0."""
    from mentor.train.recipe import TrainConfig

    config = load_config(TrainConfig, overrides=overrides)
    assert (config.onpolicy.method, config.onpolicy.grpo_weight, config.onpolicy.rollouts_per_prompt) == expected
    method = overrides[0].split("=")[1] if overrides[0].startswith("onpolicy.method") else None
    if method:  # the same from a YAML file
        path = write_yaml(tmp_path / "c.yaml", {"onpolicy": {"method": method}})
        assert load_config(TrainConfig, path).onpolicy.method == method


def test_a_field_added_since_a_folder_was_written_resumes_while_it_keeps_its_default(tmp_path):
    from mentor.config import default_values, record_config
    from mentor.train.onpolicy_config import OnPolicyConfig

    defaults = default_values(OnPolicyConfig)
    current = dataclasses.asdict(OnPolicyConfig())
    written_before = {k: v for k, v in current.items() if k != "teacher_model"}  # a folder from before the field
    path = tmp_path / "config.json"
    path.write_text(json.dumps(written_before))
    record_config(path, current, defaults=defaults)  # the same run: resumes
    with pytest.raises(ValueError, match=r"differs in teacher_model\)"):
        record_config(path, {**current, "teacher_model": "other"}, defaults=defaults)
    with pytest.raises(ValueError, match="differs in teacher_model"):
        record_config(path, current)  # without the defaults every added key is a difference


def test_default_values_nest_configs_and_leave_out_required_fields():
    from mentor.config import default_values
    from mentor.train.recipe import TrainConfig

    values = default_values(TrainConfig)
    assert values["onpolicy"]["lr"] == dataclasses.asdict(TrainConfig().onpolicy)["lr"]

    @dataclass
    class Needs:
        name: str
        size: int = 3

    assert default_values(Needs) == {"size": 3}
