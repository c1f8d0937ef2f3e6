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


def test_building_the_command_line_imports_no_heavy_layer():
    """Every ``pneumo`` command builds the whole parser first: the database layer (SQLAlchemy, ~0.2 s), the
    training pipeline, the ONNX machinery and torch must wait until a command runs (``pneumo --help`` took
    0.85 s with them, 0.09 s without)."""
    import subprocess
    import sys

    code = ("import sys; from pneumo.cli import build_parser; build_parser(); "
            "heavy = ('sqlalchemy', 'torch', 'onnxruntime', 'pneumo.store.db', 'pneumo.pipeline.cv', 'pneumo.export.runtime'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


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
