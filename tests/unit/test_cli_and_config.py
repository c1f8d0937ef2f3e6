from dataclasses import dataclass, field

import pytest

from pneumo.cli import COMMAND_MODULES, main
from pneumo.config import apply_file, apply_values, parse_overrides
from pneumo.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    depth: int = 18


@dataclass(frozen=True)
class Outer:
    lr: float = 1e-3
    name: str = "x"
    flip: bool = True
    sizes: tuple[int, ...] = (256,)
    inner: Inner = field(default_factory=Inner)
    maybe: float | None = None


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert name.replace("_", "-") in text  # module dicom_node -> command dicom-node


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\ninner:\n  depth: 34\n")
    config = apply_values(apply_file(Outer(), path), parse_overrides(["flip=false", "sizes=128,256", "maybe=0.25", "name=y"]))
    assert config == Outer(lr=0.5, name="y", flip=False, sizes=(128, 256), inner=Inner(34), maybe=0.25)
    assert apply_values(Outer(), {"inner.depth": "50"}).inner.depth == 50


@pytest.mark.parametrize("bad", [["nokey=1"], ["lr=abc"], ["flip=maybe"], ["noequals"]])
def test_bad_overrides_raise_config_error(bad):
    with pytest.raises(ConfigError):
        apply_values(apply_file(Outer(), None), parse_overrides(bad))
    assert parse_overrides(["a=b=c"]) == {"a": "b=c"}
