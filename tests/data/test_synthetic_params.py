"""``data.build.synthetic``: the planted market's parameters reach the generator from the build config."""

import json

import numpy as np
import polars as pl
import pytest

from atft.config import load_config
from atft.data.build import build_dataset
from atft.data.sources.synthetic import PARAMS, PRESETS, market_params, synthetic_market
from atft.errors import InputError


def test_null_config_keeps_the_defaults():
    cfg = load_config([])
    assert market_params(cfg.data.build.synthetic) == {"preset": "rich", **PARAMS}
    assert market_params({"lam": 0.9, "rho": None}) == {"preset": "rich", **PARAMS, "lam": 0.9}
    assert market_params({"preset": "legacy"}) == {"preset": "legacy", **PRESETS["legacy"]}


@pytest.mark.parametrize("override, name", [({"lamda": 1.0}, "lamda"), ({"idio_vol": -0.01}, "idio_vol"),
                                            ({"leader_share": 1.0}, "leader_share"), ({"preset": "wild"}, "preset"),
                                            ({"preset": "linear", "volume_state_share": 0.6}, "volume_state_share")])
def test_bad_parameters_are_refused(override, name):
    with pytest.raises(InputError, match=f"data.build.synthetic.{name}"):
        market_params(override)


def test_without_lead_lag_the_oracle_is_pure_reversal():
    # lam = 0: a[t+1] = -rho lr[t], so oracle_1d = exp(-rho log(C_t / C_{t-1})) - 1 from the closes alone
    raw, info, oracle = synthetic_market(20, 40, seed=2, horizons=[1], params={"preset": "legacy", "lam": 0.0, "rho": 0.2})
    assert info["params"]["lam"] == 0.0 and info["params"]["rho"] == 0.2
    lr = raw.select((pl.col("Close") / pl.col("Close").shift(1).over("Code")).log())["Close"].to_numpy()
    expected = np.expm1(-0.2 * lr)
    got = oracle["oracle_1d"].to_numpy()
    ok = np.isfinite(expected)
    assert ok.sum() == 20 * 39
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-4, atol=1e-7)


def test_build_config_reaches_the_generator(tmp_path):
    out = tmp_path / "syn.parquet"
    build_dataset(load_config(["data.build.source=synthetic", f"data.build.out={out}", "data.build.stocks=24",
                               "data.build.days=40", "data.build.horizons=[1]", "data.build.synthetic.lam=0.7"]))
    params = json.loads((tmp_path / "syn.parquet.meta.json").read_text())["source"]["params"]
    assert params == {"preset": "rich", **PARAMS, "lam": 0.7}
