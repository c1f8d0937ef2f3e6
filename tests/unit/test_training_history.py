import math

import numpy as np
from PIL import Image

from pneumo.training.history import COLUMNS, EpochRecord, read_history_csv, write_history


def _records(n=3):
    return [
        EpochRecord(epoch=e, lr=1e-3 / e, train_loss=1.0 / e, val_loss=1.2 / e, val_map=0.1 * e,
                    val_auc=float("nan") if e == 1 else 0.5 + 0.1 * e, seconds=2.5 * e)
        for e in range(1, n + 1)
    ]


def test_history_csv_round_trip_and_columns(tmp_path):
    records = _records()
    write_history(tmp_path, records)
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0].split(",") == list(COLUMNS)
    assert list(COLUMNS) == ["epoch", "lr", "train_loss", "val_loss", "val_map", "val_auc", "seconds"]
    assert len(lines) == 1 + len(records)
    back = read_history_csv(tmp_path / "history.csv")
    assert [r.epoch for r in back] == [1, 2, 3]
    for a, b in zip(records, back):
        for name in COLUMNS[1:]:
            x, y = getattr(a, name), getattr(b, name)
            assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-5 * max(1.0, abs(x))
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "loss_curve.png"]


def test_loss_curve_is_a_two_panel_png_that_changes_with_the_data(tmp_path):
    write_history(tmp_path / "a", _records(3))
    write_history(tmp_path / "b", _records(5))
    image_a = np.asarray(Image.open(tmp_path / "a" / "loss_curve.png").convert("L"))
    image_b = np.asarray(Image.open(tmp_path / "b" / "loss_curve.png").convert("L"))
    assert image_a.shape == (400, 1000)  # 10 x 4 inches at 100 dpi: loss panel + metric panel
    assert image_a.std() > 5  # not blank
    assert image_a.shape == image_b.shape and np.abs(image_a.astype(int) - image_b.astype(int)).sum() > 0
    # both panels hold drawings: the left and right halves are not blank
    assert image_a[:, :500].std() > 5 and image_a[:, 500:].std() > 5
