from pathlib import Path

import pytest
import yaml

from pneumo.models import config_class
from pneumo.training.config import (
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config_yaml,
    resolve_train_config,
    save_config_yaml,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("family", ["unet", "maskrcnn", "chexnet"])
def test_shipped_config_files_resolve_for_their_family(family, tmp_path):
    path = CONFIGS / f"{family}.yaml"
    config = resolve_train_config(family, path)
    raw = yaml.safe_load(path.read_text())
    assert isinstance(config.model, config_class(family))
    # every value in the file arrives in the resolved config (nested ones included)
    resolved = config_to_dict(config)
    for key, value in raw.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                assert resolved[key][sub] == sub_value, f"{key}.{sub}"
        else:
            assert resolved[key] == value, key
    if hasattr(config.model, "image_size"):
        assert config.model.image_size == config.image_size
    # the saved run config reads back to the same object
    save_config_yaml(tmp_path / "config.yaml", config, family)
    assert load_config_yaml(tmp_path / "config.yaml") == (family, config)
    assert config_from_dict(family, resolved) == config


def test_flags_beat_set_beat_file_and_family_image_size_follows(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("image_size: 320\nepochs: 7\nmodel:\n  backbone: resnet34\n")
    config = resolve_train_config("maskrcnn", path, ["epochs=9", "model.detections_per_image=3"], {"image_size": 160})
    assert (config.epochs, config.image_size, config.model.image_size) == (9, 160, 160)
    assert config.model.backbone == "resnet34" and config.model.detections_per_image == 3
    assert TrainConfig().model is None  # the family config is attached only by resolve/default_config


@pytest.mark.parametrize("values", [{"augment": {"noise_p": 1.5}}, {"augment": {"noise_std": -0.1}},
                                    {"augment": {"hflip_p": -0.2}}])
def test_out_of_range_augmentation_is_refused(values):
    from pneumo.errors import ConfigError

    with pytest.raises(ConfigError, match="augment"):
        config_from_dict("chexnet", values).validate()
