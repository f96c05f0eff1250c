"""Bad input to ``atft tune``: one ``atft: error:`` line, exit 2, nothing written."""

from __future__ import annotations

import optuna
import pytest
from tune_helpers import SMALL_SPACE, tiny, write_space

from atft.cli import main


def _tune(capsys, tmp_path, market, space_text: str, *extra: str) -> tuple[int, str]:
    space = write_space(tmp_path / "spaces", space_text)
    code = main(["tune", "--data-path", str(market), "--trials", "1", "--space", str(space),
                 "--out", str(tmp_path / "out"), *extra, *tiny(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize(("text", "expected"), [
    ("space:\n  train.optimizer.learning_rate: {low: 1.0e-4, high: 1.0e-3}\n",
     "'train.optimizer.learning_rate' is not a key of the config"),
    ("space:\n  train.optimizer.lr: {low: 1.0e-2, high: 1.0e-3, log: true}\n", "empty range: low=0.01 > high=0.001"),
    ("space:\n  model.adaptive_norm: {choices: []}\n", "empty range: choices []"),
    ("space:\n  train.optimizer.lr: {low: 0.0, high: 1.0e-3, log: true}\n", "a log range needs low > 0"),
    ("space:\n  model.adaptive_norm: {choices: [layernorm, batchnorm]}\n",
     "model.adaptive_norm='batchnorm' does not train"),
    ("search: {sampler: random}\nspace:\n  model.dropout: {low: 0.0, high: 0.2}\n", "unknown search setting 'sampler'"),
])
def test_bad_space_is_one_line_and_writes_nothing(capsys, tmp_path, market, text, expected):
    code, line = _tune(capsys, tmp_path, market, text)
    assert code == 2 and line.startswith("atft: error: --space ") and expected in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_unreachable_storage(capsys, tmp_path, market):
    code, line = _tune(capsys, tmp_path, market, SMALL_SPACE, "--storage",
                       "postgresql://atft:secret@127.0.0.1:1/optuna")
    assert code == 2 and line.startswith("atft: error: --storage postgresql://atft:***@127.0.0.1:1/optuna cannot "
                                         "be reached"), line
    assert "secret" not in line and not (tmp_path / "out").exists()


def test_study_with_another_space_is_refused_untouched(capsys, tmp_path, market):
    out = tmp_path / "out"
    out.mkdir()
    url = f"sqlite:///{out / 'study.db'}"
    study = optuna.create_study(study_name="atft", storage=url, direction="maximize")
    study.set_user_attr("space", '{"model.dropout": "something else"}')
    before = (out / "study.db").read_bytes()
    code, line = _tune(capsys, tmp_path, market, SMALL_SPACE)
    assert code == 2 and "was created with a different search space" in line, line
    assert (out / "study.db").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["study.db"]


def test_trials_must_be_positive(capsys, tmp_path, market):
    code = main(["tune", "--data-path", str(market), "--trials", "0", "--out", str(tmp_path / "out")])
    assert code == 2 and capsys.readouterr().err.startswith("atft: error: --trials 0")
