"""Headline numbers against a direct numpy computation, and the sentences built from them."""

import numpy as np
import pytest
from synthetic import make_analysis

from reports.findings import finding_sentences, headlines


def _direct(ds, run):
    r = ds.sel(run=run)
    own = np.nanmean(r["own_change"].values)
    other = np.nanmean(r["other_change"].values)
    # log-ratios from the relative changes r: log(L_after/L_before) = log(1 + r/100), by a plain loop
    own_log = [100 * np.log(1 + v / 100) for v in r["own_change"].values]
    other_log = [100 * np.log(1 + v / 100) for v in r["other_change"].values]
    return {"own_change": own, "other_change": other, "transfer": sum(other_log) / sum(own_log),
            "own_log": np.mean(own_log), "other_log": np.mean(other_log),
            "own_median": np.median(r["own_change"].values), "next_log": np.nan,
            "ntk_alignment": r["ntk_alignment_init"].values[-1],
            "cka_init": r["cka_init"].isel(checkpoint=-1).values.mean(),
            "test_acc": 100 * r["test_acc"].values[-1], "train_acc": 100 * r["train_acc"].values[-1],
            "gn_residual_median": np.nanmedian(r["gn_residual"].values)
            if np.isfinite(r["gn_residual"].values).any() else np.nan}


def test_headlines_match_direct_computation(analysis_ds):
    hs = headlines(analysis_ds)
    assert [h.optimizer for h in hs] == ["gn", "sgd", "adam"]
    for h in hs:
        for key, value in _direct(analysis_ds, h.optimizer).items():
            np.testing.assert_allclose(h.mean(key), value, rtol=1e-12, equal_nan=True, err_msg=key)
            assert np.isnan(h.std(key))


def test_seeds_are_averaged_with_spread(analysis_seeds):
    hs = headlines(analysis_seeds)
    assert [(h.optimizer, h.runs) for h in hs] == [("gn", ["gn-seed0", "gn-seed1"]),
                                                  ("adam", ["adam-seed0", "adam-seed1"])]
    per_seed = [_direct(analysis_seeds, f"gn-seed{s}")["test_acc"] for s in (0, 1)]
    assert hs[0].mean("test_acc") == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert hs[0].std("test_acc") == pytest.approx(np.std(per_seed, ddof=1), rel=1e-12)


def test_final_values_skip_nan_padding(analysis_ds):
    ragged = analysis_ds.copy(deep=True)
    ragged["ntk_alignment_init"].loc[{"run": "adam", "checkpoint": 11}] = np.nan
    adam = headlines(ragged)[2]
    assert adam.mean("ntk_alignment") == ragged["ntk_alignment_init"].sel(run="adam", checkpoint=10).item()


def test_sentences_state_the_numbers(analysis_ds):
    hs = headlines(analysis_ds)
    text = " ".join(finding_sentences(hs))
    gn = hs[0]
    def two_digits(x):  # two significant digits, positional notation
        return np.format_float_positional(x, precision=2, fractional=False, trim="-")

    assert (f"GN's updates reduce the loss of the batch they were computed on by {two_digits(abs(gn.mean('own_log')))}% "
            f"per step (mean log-ratio), but reduce the loss of a held-out batch by only "
            f"{two_digits(abs(gn.mean('other_log')))}% (transfer {two_digits(gn.mean('transfer'))})") in text
    # one seed each: the values are listed, never ranked (reports.ranking)
    assert "is lowest for" not in text and "highest for" not in text and "largest" not in text
    assert (f"Transfer to other batches (1 = a step helps every batch alike, 0 = only its own): GN "
            f"{gn.mean('transfer'):.2f}, SGD {hs[1].mean('transfer'):.2f}, Adam {hs[2].mean('transfer'):.2f} (every "
            "optimiser with one seed: the seed-to-seed spread is unknown, so the optimisers are not ranked).") in text
    assert f"Final test accuracy: GN {gn.mean('test_acc'):.1f}%, SGD" in text
    assert "SGD's steps" not in text and "GN's steps move the linearised outputs" in text


def test_sentences_follow_signs_and_sizes():
    ds = make_analysis(optimizers=("sgd",), n_steps=50)
    ds["own_change"][:] = 100 * (np.exp(-0.04) - 1)  # log-ratio −4 %
    ds["other_change"][:] = 100 * (np.exp(0.01) - 1)
    (sentence,) = [s for s in finding_sentences(headlines(ds)) if "updates" in s]
    assert sentence == ("SGD's updates reduce the loss of the batch they were computed on by 4% per step (mean "
                        "log-ratio), but increase the loss of a held-out batch by 1% (transfer -0.25).")
    ds["other_change"][:] = 100 * (np.exp(-0.03) - 1)
    ds["next_change"] = ds["other_change"] * 0 + 100 * (np.exp(-0.02) - 1)
    (sentence,) = [s for s in finding_sentences(headlines(ds)) if "updates" in s]
    assert ("and reduce the loss of a held-out batch by 3% (transfer 0.75); the next training batch's loss falls "
            "by 2% (transfer 0.5).") in sentence


def test_missing_variables_drop_their_sentences():
    ds = make_analysis(optimizers=("adam",), n_steps=50)
    ds = ds.drop_vars(["ntk_alignment_init", "own_change", "test_acc"])
    hs = headlines(ds)
    assert np.isnan(hs[0].mean("ntk_alignment")) and np.isnan(hs[0].mean("transfer"))
    text = " ".join(finding_sentences(hs))
    assert "NTK" not in text and "updates" not in text and "test accuracy" not in text
    assert "Under Adam the hidden representations end with CKA" in text


def test_float32_dataset_matches_float64_loosely(analysis_ds):
    as32 = analysis_ds.astype({name: "float32" for name in analysis_ds.data_vars})
    for h64, h32 in zip(headlines(analysis_ds), headlines(as32)):
        for key in ("own_change", "other_change", "transfer", "ntk_alignment", "cka_init", "test_acc"):
            # float32 storage: relative error of a mean of ~400 values stays within ~1e-6
            np.testing.assert_allclose(h32.mean(key), h64.mean(key), rtol=2e-6, err_msg=key)
