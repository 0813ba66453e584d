"""The XGBoost integration, end to end: real training on real data, read back from the store.

Breast cancer (binary classification), diabetes (regression, as a pandas frame) and a ranking
set built from synthetic query groups; the callback used by hand and autolog of both APIs;
early stopping; the fault-injection harness on every patched entry point; the seven
behaviours of STYLE.md; both import orders in a subprocess.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

xgb = pytest.importorskip("xgboost")
np = pytest.importorskip("numpy")
datasets = pytest.importorskip("sklearn.datasets")

import boosting_checks as checks  # noqa: E402

import mltrail  # noqa: E402
from harness import check_fault_tolerance, check_user_exception  # noqa: E402
from mltrail.autolog import _safety, engine, runs  # noqa: E402
from mltrail.autolog._safety import InjectedFault, inject_fault  # noqa: E402
from mltrail.integrations import _boosting  # noqa: E402
from mltrail.integrations import xgboost as mlx  # noqa: E402


@pytest.fixture(autouse=True)
def _autolog_off() -> Iterator[None]:
    yield
    engine.disable_all()
    runs._reset_for_tests()
    _safety.reset_warnings()


@pytest.fixture(scope="module")
def cancer() -> dict[str, Any]:
    X, y = datasets.load_breast_cancer(return_X_y=True)
    return {"X_train": X[:400], "y_train": y[:400], "X_valid": X[400:], "y_valid": y[400:]}


@pytest.fixture(scope="module")
def diabetes() -> Any:
    return datasets.load_diabetes(return_X_y=True, as_frame=True)


def _dmatrices(data: dict[str, Any]) -> tuple[Any, Any]:
    return (xgb.DMatrix(data["X_train"], data["y_train"]), xgb.DMatrix(data["X_valid"], data["y_valid"]))


PARAMS = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 7}


def _autolog_runs() -> list[Any]:
    return checks.autolog_runs("xgboost")


IMPORTANCE_FILES = checks.IMPORTANCE_FILES


# ---------------------------------------------------------------------- pure helpers
def test_config_params_hold_the_defaults_the_user_did_not_set(cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _dmatrices(cancer)
    booster = xgb.train({"max_depth": 2, "nthread": 1}, dtrain, 2, evals=[(dvalid, "v")], verbose_eval=False)
    params = mlx.config_params(booster.save_config())
    assert params["max_depth"] == "2"  # what the user set
    assert params["eta"] == "0.3" and params["learning_rate"] == "0.3"  # float32 0.300000012 shortened
    assert params["objective"] == "reg:squarederror" and params["booster"] == "gbtree"
    assert params["min_child_weight"] == "1" and params["subsample"] == "1"
    assert params["eval_metric"] == "rmse"
    assert "num_trees" not in params and "base_score" not in params  # model state, not params
    assert all(v != "" for v in params.values())


def test_small_helpers() -> None:
    assert _boosting.short_number("0.100000001") == "0.1"
    assert _boosting.short_number("0.20000000000000001") == "0.2"
    assert _boosting.short_number("18446744073709551615") == "18446744073709551615"
    assert _boosting.short_number("1e-05") == "1e-05" and _boosting.short_number("auto") == "auto"
    assert _boosting.metric_key("valid", "ndcg@5") == "valid-ndcg_at_5"
    assert _boosting.metric_key("eval set", "error@0.7") == "eval set-error_at_0.7"
    assert _boosting.metric_key("v", "my\\metric!") == "v-my_metric_"
    keys = _boosting.MetricKeys()
    log = {"train": {"logloss": [0.5, 0.4]}, "test": {"auc": [(0.9, 0.01)]}, "empty": {"x": []}}
    assert mlx.iteration_metrics(log, keys) == {"train-logloss": 0.4, "test-auc": 0.9, "test-auc-std": 0.01}
    assert _boosting.loggable_params({"a": None, "b": 1, "f": len, "bad key!": 2, "long": "x" * 7000}) == {
        "b": "1", "f": "len", "long": "x" * 5997 + "...",
    }
    assert _boosting.pairs_to_dict([("eval_metric", "auc"), ("eval_metric", "logloss"), ("eta", 0.1)]) == {
        "eval_metric": ["auc", "logloss"], "eta": 0.1,
    }
    assert mlx.train_call_params(({"eta": 0.1}, None), {"early_stopping_rounds": 5, "obj": len}) == {
        "eta": 0.1, "num_boost_round": 10, "early_stopping_rounds": 5, "obj": len,
    }


def test_importance_chart_is_an_svg_with_escaped_names() -> None:
    svg = _boosting.importance_svg({"gain": {"a<b": 2.0, "plain": 1.0, "vec": [1.0, -3.0]}, "weight": {"w": 1}})
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "a&lt;b" in svg and "a<b" not in svg
    assert svg.index("vec") < svg.index("a&lt;b") < svg.index("plain")  # largest first (|1|+|-3| = 4)
    assert "Feature importance (gain)" in svg and "Feature importance (weight)" in svg
    many = _boosting.importance_svg({"t": {f"f{i}": float(i) for i in range(100)}})
    assert "and 60 more" in many


# ---------------------------------------------------------------------- the callback, by hand
def test_callback_logs_into_the_active_run(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _dmatrices(cancer)
    evals_result: dict[str, Any] = {}
    with mltrail.start_run() as run:
        booster = xgb.train(
            PARAMS, dtrain, 25, evals=[(dtrain, "train"), (dvalid, "valid")], evals_result=evals_result,
            verbose_eval=False, callbacks=[mlx.MLTrailCallback()],
        )
    got = checks.run(run.info.run_id)
    assert got.info.status == "FINISHED"
    for data_name in ("train", "valid"):
        steps, values = checks.history(run.info.run_id, f"{data_name}-logloss")
        assert steps == list(range(25))
        assert values == pytest.approx(evals_result[data_name]["logloss"])
    params = got.data.params
    assert params["max_depth"] == "3" and params["objective"] == "binary:logistic"
    assert params["eta"] == "0.3" and params["tree_method"]  # defaults the user did not set
    assert "best_iteration" not in got.data.metrics  # no early stopping
    assert IMPORTANCE_FILES <= checks.artifacts(run.info.run_id)
    assert set(checks.importances(run.info.run_id)) == set(mlx.IMPORTANCE_TYPES)
    assert checks.artifacts(run.info.run_id, "model") == {"model/model.ubj", "model/mltrail_model.json"}
    loaded = mlx.load_model(run.info.run_id)
    assert isinstance(loaded, xgb.Booster)
    assert np.array_equal(loaded.predict(dvalid), booster.predict(dvalid))


def test_callback_starts_and_ends_a_run_when_none_is_active(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _dmatrices(cancer)
    callback = mlx.MLTrailCallback(log_models=False, importance_types=["gain"], log_every_n_steps=4)
    xgb.train(PARAMS, dtrain, 10, evals=[(dvalid, "valid")], verbose_eval=False, callbacks=[callback])
    assert mltrail.active_run() is None
    first = mltrail.last_active_run()
    assert first is not None and first.info.status == "FINISHED"
    assert checks.history(first.info.run_id, "valid-logloss")[0] == [0, 4, 8]
    files = checks.artifacts(first.info.run_id)
    assert "feature_importance.json" in files and "model" not in files
    assert set(checks.importances(first.info.run_id)) == {"gain"}
    # The same callback object serves a second training: a second run.
    xgb.train(PARAMS, dtrain, 3, evals=[(dvalid, "valid")], verbose_eval=False, callbacks=[callback])
    second = mltrail.last_active_run()
    assert second.info.run_id != first.info.run_id
    assert checks.history(second.info.run_id, "valid-logloss")[0] == [0]


def test_callback_with_an_explicit_run_id(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _dmatrices(cancer)
    client = mltrail.Client()
    target = client.create_run("0", run_name="by-id")
    with mltrail.start_run() as other:
        xgb.train(PARAMS, dtrain, 5, evals=[(dvalid, "valid")], verbose_eval=False,
                  callbacks=[mlx.MLTrailCallback(run_id=target.info.run_id, log_models=False)])
    assert checks.history(target.info.run_id, "valid-logloss")[0] == [0, 1, 2, 3, 4]
    assert checks.run(target.info.run_id).data.params["max_depth"] == "3"
    assert checks.run(other.info.run_id).data.metrics == {}


def test_callback_records_early_stopping(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _dmatrices(cancer)
    with mltrail.start_run() as run:
        booster = xgb.train(
            {**PARAMS, "eta": 0.6}, dtrain, 300, evals=[(dvalid, "valid")], early_stopping_rounds=5,
            verbose_eval=False, callbacks=[mlx.MLTrailCallback(log_models=False)],
        )
    metrics = checks.run(run.info.run_id).data.metrics
    assert booster.num_boosted_rounds() < 300  # it did stop early
    assert metrics["best_iteration"] == booster.best_iteration
    assert metrics["best_score"] == pytest.approx(booster.best_score)
    assert metrics["stopped_iteration"] == booster.num_boosted_rounds() - 1
    steps, _ = checks.history(run.info.run_id, "valid-logloss")
    assert steps[-1] == metrics["stopped_iteration"]


def test_callback_copies_and_pickles_with_its_options_only(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    callback = mlx.MLTrailCallback(model_format="json", log_every_n_steps=2)
    clf = xgb.XGBClassifier(n_estimators=4, n_jobs=1, callbacks=[callback])
    clf.fit(cancer["X_train"], cancer["y_train"], eval_set=[(cancer["X_valid"], cancer["y_valid"])], verbose=False)
    for clone in (copy.deepcopy(callback), pickle.loads(pickle.dumps(callback))):
        assert type(clone) is mlx.MLTrailCallback
        assert clone.options == callback.options and not clone._run
    from sklearn.base import clone as sk_clone

    assert sk_clone(clf).get_params()["callbacks"][0].options.model_format == "json"


def test_callback_rejects_bad_options() -> None:
    with pytest.raises(mltrail.InvalidValueError, match="model_format"):
        mlx.MLTrailCallback(model_format="pickle")
    with pytest.raises(mltrail.InvalidValueError, match="importance_types"):
        mlx.MLTrailCallback(importance_types=["gain", "split"])
    with pytest.raises(mltrail.InvalidValueError, match="log_every_n_steps"):
        mlx.MLTrailCallback(log_every_n_steps=0)
    with pytest.raises(mltrail.InvalidValueError, match="model_format"):
        mlx.autolog(model_format="zip")


def test_our_failures_in_the_callback_never_stop_training(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _dmatrices(cancer)
    baseline = xgb.train(PARAMS, dtrain, 6, evals=[(dvalid, "valid")], verbose_eval=False).predict(dvalid)
    for point in ("before_training", "after_iteration", "after_training"):
        _safety.reset_warnings()
        with _nonstrict(), pytest.warns(mltrail.autolog.AutologWarning, match=f"xgboost: {point} failed") as caught:
            with inject_fault("xgboost", point):
                booster = xgb.train(PARAMS, dtrain, 6, evals=[(dvalid, "valid")], verbose_eval=False,
                                    callbacks=[mlx.MLTrailCallback()])
        assert len([w for w in caught if issubclass(w.category, mltrail.autolog.AutologWarning)]) == 1
        assert np.array_equal(booster.predict(dvalid), baseline)
        mltrail.end_run()
    # Strict mode (the suite's default) raises our error instead.
    with inject_fault("xgboost", "after_iteration"), pytest.raises(InjectedFault):
        xgb.train(PARAMS, dtrain, 2, evals=[(dvalid, "valid")], verbose_eval=False,
                  callbacks=[mlx.MLTrailCallback()])
    mltrail.end_run()


def _nonstrict() -> Any:
    from harness import non_strict

    return non_strict()


# ---------------------------------------------------------------------- autolog: xgboost.train
def test_autolog_train_with_early_stopping(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog()
    dtrain, dvalid = _dmatrices(cancer)
    booster = xgb.train(
        {**PARAMS, "eta": 0.6, "eval_metric": ["error", "logloss"]}, dtrain, 300,
        evals=[(dtrain, "train"), (dvalid, "valid")], early_stopping_rounds=5, verbose_eval=False,
    )
    assert mltrail.active_run() is None
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["num_boost_round"] == "300" and params["early_stopping_rounds"] == "5"
    assert params["eval_metric"] == "['error', 'logloss']" and params["eta"] == "0.6"
    assert params["gamma"] == "0" and params["grow_policy"] == "depthwise"  # defaults
    rounds = booster.num_boosted_rounds()
    for key in ("train-error", "train-logloss", "valid-error", "valid-logloss"):
        assert checks.history(run.info.run_id, key)[0] == list(range(rounds))
    metrics = run.data.metrics
    assert metrics["best_iteration"] == booster.best_iteration
    assert metrics["best_score"] == pytest.approx(booster.best_score)
    assert metrics["stopped_iteration"] == rounds - 1
    inputs = checks.inputs(run)
    assert inputs == {
        "training:train": {"num_rows": 400, "num_columns": 30},
        "evaluation:valid": {"num_rows": 169, "num_columns": 30},
    }
    assert IMPORTANCE_FILES <= checks.artifacts(run.info.run_id)
    gain = checks.importances(run.info.run_id)["gain"]
    assert gain == pytest.approx(booster.get_score(importance_type="gain"))
    loaded = mlx.load_model(run.info.run_id)
    assert np.array_equal(loaded.predict(dvalid), booster.predict(dvalid))
    assert loaded.best_iteration == booster.best_iteration


def test_autolog_train_from_the_training_module_and_options(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog(model_format="json", importance_types=["weight"], log_importance_plots=False,
                log_datasets=False, log_every_n_steps=3, extra_tags={"team": "ranking"})
    from xgboost.training import train

    dtrain, dvalid = _dmatrices(cancer)
    booster = train(PARAMS, dtrain, num_boost_round=7, evals=[(dvalid, "valid")], verbose_eval=False)
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.data.tags["team"] == "ranking"
    assert checks.history(run.info.run_id, "valid-logloss")[0] == [0, 3, 6]
    files = checks.artifacts(run.info.run_id)
    assert "feature_importance.json" in files and "feature_importance.svg" not in files
    assert set(checks.importances(run.info.run_id)) == {"weight"}
    assert run.inputs.dataset_inputs == ()
    meta = json.loads(Path(mltrail.Client().download_artifacts(run.info.run_id, "model/mltrail_model.json")).read_text())
    assert meta["model_format"] == "json" and meta["model_file"] == "model.json"
    assert meta["xgboost_version"] == xgb.__version__
    assert np.array_equal(mlx.load_model(run.info.run_id).predict(dvalid), booster.predict(dvalid))


def test_autolog_without_models(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog(log_models=False)
    dtrain, _ = _dmatrices(cancer)
    xgb.train(PARAMS, dtrain, 2)
    (run,) = _autolog_runs()
    assert "model" not in checks.artifacts(run.info.run_id)
    with pytest.raises(mltrail.NotFoundError):
        mlx.load_model(run.info.run_id)


def test_autolog_inside_the_users_run_and_a_second_training_goes_to_a_child(
    sqlite_uri: str, cancer: dict[str, Any]
) -> None:
    mlx.autolog()
    dtrain, dvalid = _dmatrices(cancer)
    with mltrail.start_run() as parent:
        xgb.train(PARAMS, dtrain, 3, evals=[(dvalid, "valid")], verbose_eval=False)
        xgb.train({**PARAMS, "max_depth": 5}, dtrain, 4, evals=[(dvalid, "valid")], verbose_eval=False)
    assert checks.run(parent.info.run_id).data.params["max_depth"] == "3"
    assert checks.history(parent.info.run_id, "valid-logloss")[0] == [0, 1, 2]
    children = [r for r in mltrail.search_runs(output_format="list") if r.parent_run_id == parent.info.run_id]
    assert len(children) == 1
    assert children[0].data.params["max_depth"] == "5"
    assert checks.history(children[0].info.run_id, "valid-logloss")[0] == [0, 1, 2, 3]


def test_exclusive_leaves_the_users_run_alone(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog(exclusive=True)
    dtrain, dvalid = _dmatrices(cancer)
    with mltrail.start_run() as run:
        xgb.train(PARAMS, dtrain, 3, evals=[(dvalid, "valid")], verbose_eval=False)
    got = checks.run(run.info.run_id)
    assert got.data.metrics == {} and got.data.params == {}


def test_user_callback_with_autolog_logs_once(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog()
    dtrain, dvalid = _dmatrices(cancer)
    xgb.train(PARAMS, dtrain, 5, evals=[(dvalid, "valid")], verbose_eval=False, callbacks=[mlx.MLTrailCallback()])
    runs_ = mltrail.search_runs(output_format="list")
    assert len(runs_) == 1
    assert checks.history(runs_[0].info.run_id, "valid-logloss")[0] == [0, 1, 2, 3, 4]
    clf = xgb.XGBClassifier(n_estimators=3, n_jobs=1, callbacks=[mlx.MLTrailCallback(log_models=False)])
    clf.fit(cancer["X_train"], cancer["y_train"], eval_set=[(cancer["X_valid"], cancer["y_valid"])], verbose=False)
    runs_ = mltrail.search_runs(output_format="list")
    assert len(runs_) == 2
    latest = mltrail.last_active_run()
    assert checks.history(latest.info.run_id, "validation_0-logloss")[0] == [0, 1, 2]
    assert "mltrail.autolog" not in latest.data.tags  # the callback's run, not autolog's


# ---------------------------------------------------------------------- autolog: scikit-learn API
def test_autolog_classifier_with_early_stopping(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog()
    clf = xgb.XGBClassifier(n_estimators=300, learning_rate=0.6, max_depth=2, n_jobs=1, early_stopping_rounds=5)
    clf.fit(cancer["X_train"], cancer["y_train"], eval_set=[(cancer["X_train"], cancer["y_train"]),
                                                              (cancer["X_valid"], cancer["y_valid"])], verbose=False)
    (run,) = _autolog_runs()  # one fit, one run: the train() inside is part of it
    run = checks.run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["estimator_name"] == "XGBClassifier"
    assert run.data.tags["estimator_class"] == "xgboost.sklearn.XGBClassifier"
    params = run.data.params
    assert params["n_estimators"] == "300" and params["learning_rate"] == "0.6" and params["max_depth"] == "2"
    assert params["early_stopping_rounds"] == "5"
    assert params["objective"] == "binary:logistic" and params["subsample"] == "1"  # from the booster
    evals = clf.evals_result()
    for name in ("validation_0", "validation_1"):
        steps, values = checks.history(run.info.run_id, f"{name}-logloss")
        assert steps == list(range(len(evals[name]["logloss"])))
        assert values == pytest.approx(evals[name]["logloss"])
    assert run.data.metrics["best_iteration"] == clf.best_iteration
    assert run.data.metrics["best_score"] == pytest.approx(clf.best_score)
    contexts = {(d.tags["mltrail.data.context"], d.dataset.name) for d in run.inputs.dataset_inputs}
    assert len(contexts) == 2 and ("evaluation", "validation_1") in contexts  # eval set 0 is X itself
    assert {c for c, _ in contexts} == {"training", "evaluation"}
    loaded = mlx.load_model(run.info.run_id)
    assert type(loaded) is xgb.XGBClassifier
    assert np.array_equal(loaded.predict_proba(cancer["X_valid"]), clf.predict_proba(cancer["X_valid"]))


def test_autolog_regressor_on_a_pandas_frame(sqlite_uri: str, diabetes: Any) -> None:
    X, y = diabetes
    mlx.autolog()
    reg = xgb.XGBRegressor(n_estimators=20, max_depth=3, n_jobs=1)
    reg.fit(X.iloc[:300], y.iloc[:300], eval_set=[(X.iloc[300:], y.iloc[300:])], verbose=False)
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.data.tags["estimator_name"] == "XGBRegressor"
    assert checks.history(run.info.run_id, "validation_0-rmse")[0] == list(range(20))
    (train_input,) = [d for d in run.inputs.dataset_inputs if d.tags["mltrail.data.context"] == "training"]
    assert train_input.dataset.source_type == "pandas"
    assert "bmi" in train_input.dataset.schema
    gain = checks.importances(run.info.run_id)["gain"]
    assert set(gain) <= set(X.columns) and "bmi" in gain  # feature names from the frame
    svg = Path(mltrail.Client().download_artifacts(run.info.run_id, "feature_importance.svg")).read_text()
    assert "<svg" in svg and ">bmi<" in svg
    loaded = mlx.load_model(run.info.run_id)
    assert type(loaded) is xgb.XGBRegressor
    assert np.allclose(loaded.predict(X.iloc[300:]), reg.predict(X.iloc[300:]))


def test_autolog_ranker_on_synthetic_groups(sqlite_uri: str) -> None:
    X, y, qid = checks.ranking_data()
    Xv, yv, qv = checks.ranking_data(seed=1)
    mlx.autolog()
    ranker = xgb.XGBRanker(n_estimators=8, max_depth=3, n_jobs=1, eval_metric="ndcg@5")
    ranker.fit(X, y, qid=qid, eval_set=[(Xv, yv)], eval_qid=[qv], verbose=False)
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.data.tags["estimator_name"] == "XGBRanker"
    steps, values = checks.history(run.info.run_id, "validation_0-ndcg_at_5")
    assert steps == list(range(8))
    assert values == pytest.approx(ranker.evals_result()["validation_0"]["ndcg@5"])
    assert run.data.params["objective"].startswith("rank:")
    loaded = mlx.load_model(run.info.run_id)
    assert type(loaded) is xgb.XGBRanker
    assert np.allclose(loaded.predict(Xv), ranker.predict(Xv))


def test_random_forest_subclass_is_one_run(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog()
    xgb.XGBRFClassifier(n_estimators=5, max_depth=3, n_jobs=1).fit(cancer["X_train"], cancer["y_train"])
    (run,) = _autolog_runs()  # XGBRFClassifier.fit -> XGBClassifier.fit -> train: one record
    run = checks.run(run.info.run_id)
    assert run.data.tags["estimator_name"] == "XGBRFClassifier"
    assert run.data.params["num_parallel_tree"] == "5"


def test_second_fit_in_a_users_run_goes_to_a_child_run(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog()
    with mltrail.start_run() as parent:
        xgb.XGBClassifier(n_estimators=2, max_depth=2, n_jobs=1).fit(cancer["X_train"], cancer["y_train"])
        xgb.XGBClassifier(n_estimators=3, max_depth=4, n_jobs=1).fit(cancer["X_train"], cancer["y_train"])
    assert checks.run(parent.info.run_id).data.params["max_depth"] == "2"
    children = [r for r in mltrail.search_runs(output_format="list") if r.parent_run_id == parent.info.run_id]
    assert [c.data.params["max_depth"] for c in children] == ["4"]


def test_every_integration_on_still_gives_one_run_per_fit(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    """With mltrail.autolog() the scikit-learn integration leaves XGBoost's estimators to this one."""
    mltrail.autolog()
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(cancer["X_train"], cancer["y_train"])
    runs_ = mltrail.search_runs(output_format="list")
    assert [r.data.tags.get("mltrail.autolog") for r in runs_] == ["xgboost"]
    assert "model" in checks.artifacts(runs_[0].info.run_id)
    # Inside a scikit-learn meta-estimator the outer fit owns the run: one record.
    make_pipeline(StandardScaler(), xgb.XGBClassifier(n_estimators=3, n_jobs=1)).fit(
        cancer["X_train"], cancer["y_train"]
    )
    assert len(mltrail.search_runs(output_format="list")) == 2


# ---------------------------------------------------------------------- the seven behaviours
def test_users_exception_propagates_and_the_run_fails(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog()
    dtrain, _ = _dmatrices(cancer)

    def train_with(boom: Any) -> None:
        def objective(preds: Any, data: Any) -> Any:
            boom()

        xgb.train(PARAMS, dtrain, 3, obj=objective)

    check_user_exception(train_with)
    assert mltrail.last_active_run().info.status == "FAILED"

    class Stop(xgb.callback.TrainingCallback):
        def __init__(self, boom: Any) -> None:
            self.boom = boom

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            self.boom()
            return False

    def fit_with(boom: Any) -> None:
        xgb.XGBClassifier(n_estimators=3, n_jobs=1, callbacks=[Stop(boom)]).fit(cancer["X_train"], cancer["y_train"])

    check_user_exception(fit_with)
    last = mltrail.last_active_run()
    assert last.info.status == "FAILED" and last.data.tags["estimator_name"] == "XGBClassifier"


def test_our_failures_never_break_train(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog()
    dtrain, dvalid = _dmatrices(cancer)
    points = check_fault_tolerance(
        lambda: xgb.train(PARAMS, dtrain, 4, evals=[(dvalid, "valid")], verbose_eval=False).predict(dvalid).tolist(),
        integration="xgboost",
        expect_points={"when", "run_start", "pre", "after_iteration", "post", "run_end"},
    )
    assert points == ["after_iteration", "after_training", "dataset", "importances", "model", "post", "pre",
                      "run_end", "run_start", "when"]  # dataset, importances, model: background steps


def test_our_failures_never_break_fit(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mlx.autolog()
    X, y, qid = checks.ranking_data()
    check_fault_tolerance(
        lambda: xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(
            cancer["X_train"], cancer["y_train"], eval_set=[(cancer["X_valid"], cancer["y_valid"])], verbose=False
        ).predict_proba(cancer["X_valid"]).tolist(),
        integration="xgboost",
        expect_points={"when", "run_start", "pre", "post", "run_end"},
    )
    check_fault_tolerance(
        lambda: xgb.XGBRanker(n_estimators=3, n_jobs=1).fit(X, y, qid=qid).predict(X).tolist(),
        integration="xgboost",
    )


DISABLE_SCRIPT = """
import mltrail, xgboost as xgb
from xgboost import sklearn as xsk, training
from mltrail.autolog import autolog_status
from mltrail.integrations import xgboost as mlx

originals = {
    (xgb, "train"): vars(xgb)["train"],
    (training, "train"): vars(training)["train"],
    (xsk.XGBModel, "fit"): vars(xsk.XGBModel)["fit"],
    (xsk.XGBClassifier, "fit"): vars(xsk.XGBClassifier)["fit"],
    (xsk.XGBRanker, "fit"): vars(xsk.XGBRanker)["fit"],
}
mlx.autolog()
mlx.autolog(model_format="json")  # again: the config changes, the wrappers stay
patched = autolog_status()["xgboost"].patched
assert len(patched) == len(set(patched)), patched
assert {"xgboost:train", "xgboost.training:train", "xgboost.sklearn:XGBModel.fit",
        "xgboost.sklearn:XGBClassifier.fit", "xgboost.sklearn:XGBRanker.fit"} <= set(patched), patched
for (owner, attr), original in originals.items():
    wrapper = vars(owner)[attr]
    assert wrapper is not original and wrapper.__wrapped__ is original, (owner, attr)  # one layer
assert "fit" not in vars(xsk.XGBRegressor)  # inherits XGBModel.fit: nothing created on it
mlx.autolog(disable=True)
for (owner, attr), original in originals.items():
    assert vars(owner)[attr] is original, (owner, attr)
assert autolog_status()["xgboost"].state == "off"
print("ok")
"""


def test_disable_restores_the_originals_and_twice_is_one_wrapper(tmp_path: Path) -> None:
    # A fresh interpreter: what other tests patched (and other integrations stacked on the same
    # slots) cannot leak into what this test reads.
    assert checks.run_script(DISABLE_SCRIPT, tmp_path) == "ok"


SCRIPT = """
import json, sys
import mltrail
BEFORE
mltrail.autolog()
AFTER
from sklearn.datasets import load_breast_cancer
X, y = load_breast_cancer(return_X_y=True)
xgboost.train({"nthread": 1, "objective": "binary:logistic"}, xgboost.DMatrix(X, y), 3,
              evals=[(xgboost.DMatrix(X, y), "train")], verbose_eval=False)
xgboost.XGBClassifier(n_estimators=2, n_jobs=1).fit(X, y)
mltrail.flush()
runs = mltrail.search_runs(output_format="list")
print(json.dumps({"runs": sorted(r.data.tags.get("estimator_name", "train") for r in runs),
                  "steps": len(mltrail.Client().get_metric_history(
                      [r for r in runs if "estimator_name" not in r.data.tags][0].info.run_id,
                      "train-logloss")),
                  "state": mltrail.autolog_status()["xgboost"].state}))
"""


@pytest.mark.parametrize("order", ["autolog-first", "import-first"])
def test_both_import_orders(tmp_path: Path, order: str) -> None:
    out = checks.import_order_result(SCRIPT, "xgboost", order, tmp_path)
    assert out == {"runs": ["XGBClassifier", "train"], "steps": 3, "state": "active"}


def test_importing_the_integration_imports_no_xgboost(tmp_path: Path) -> None:
    assert checks.state_without_import("xgboost", "xgboost", tmp_path) == "waiting"
