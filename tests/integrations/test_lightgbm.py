"""The LightGBM integration, end to end: real training on real data, read back from the store.

Breast cancer (binary classification), diabetes (regression, as a pandas frame) and a ranking
set built from synthetic query groups; the callback used by hand and autolog of both APIs;
early stopping; the fault-injection harness on every patched entry point; the seven
behaviours of STYLE.md; both import orders in a subprocess.
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

lgb = pytest.importorskip("lightgbm")
np = pytest.importorskip("numpy")
datasets = pytest.importorskip("sklearn.datasets")

import boosting_checks as checks  # noqa: E402

import mltrail  # noqa: E402
from harness import check_fault_tolerance, check_user_exception, non_strict  # noqa: E402
from mltrail.autolog import _safety, engine, jobs, runs  # noqa: E402
from mltrail.autolog._safety import InjectedFault, inject_fault  # noqa: E402
from mltrail.integrations import _boosting  # noqa: E402
from mltrail.integrations import lightgbm as mll  # noqa: E402

pytestmark = [
    # LightGBM 4.0 reading a pandas frame calls np.find_common_type, deprecated in numpy 1.25.
    pytest.mark.filterwarnings("ignore:np.find_common_type is deprecated:DeprecationWarning"),
]


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


def _ranking_data(seed: int = 0) -> tuple[Any, Any, list[int]]:
    """The shared ranking set, with LightGBM's group sizes instead of query ids."""
    X, y, qid = checks.ranking_data(seed)
    return X, y, np.bincount(qid).tolist()


PARAMS = {"objective": "binary", "num_leaves": 7, "num_threads": 1, "verbose": -1, "seed": 7,
          "deterministic": True}


def _datasets(data: dict[str, Any]) -> tuple[Any, Any]:
    dtrain = lgb.Dataset(data["X_train"], data["y_train"], free_raw_data=False)
    return dtrain, lgb.Dataset(data["X_valid"], data["y_valid"], reference=dtrain, free_raw_data=False)


def _eval_kwargs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Validation sets the way this LightGBM wants them (eval_X/eval_y from 4.7, else eval_set)."""
    if "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters:
        return {"eval_X": tuple(x for x, _ in pairs), "eval_y": tuple(y for _, y in pairs)}
    return {"eval_set": pairs}


def _autolog_runs() -> list[Any]:
    return checks.autolog_runs("lightgbm")


IMPORTANCE_FILES = checks.IMPORTANCE_FILES


# ---------------------------------------------------------------------- pure helpers
def test_model_params_hold_the_defaults(cancer: dict[str, Any]) -> None:
    dtrain, _ = _datasets(cancer)
    booster = lgb.train(PARAMS, dtrain, 3)
    params = mll.model_params(booster.model_to_string())
    assert params["num_leaves"] == "7" and params["objective"] == "binary"
    assert params["learning_rate"] == "0.1" and params["min_data_in_leaf"] == "20"  # defaults
    assert params["bagging_fraction"] == "1" and params["num_iterations"] == "3"
    assert all(params.values())  # empty ones left out
    assert mll.model_params("no parameters here") == {}


def test_iteration_metrics_and_keys() -> None:
    keys = _boosting.MetricKeys()
    results = [("valid_0", "ndcg@5", 0.8, True), ("valid", "auc", 0.9, True, 0.02)]
    assert mll.iteration_metrics(results, keys) == {
        "valid_0-ndcg_at_5": 0.8, "valid-auc": 0.9, "valid-auc-std": 0.02,
    }


# ---------------------------------------------------------------------- the callback, by hand
def test_callback_logs_into_the_active_run(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _datasets(cancer)
    record: dict[str, Any] = {}
    callback = mll.MLTrailCallback()
    with mltrail.start_run() as run:
        booster = lgb.train(PARAMS, dtrain, 20, valid_sets=[dtrain, dvalid], valid_names=["train", "valid"],
                            callbacks=[callback, lgb.record_evaluation(record)])
        callback.finish(booster)
    got = checks.run(run.info.run_id)
    assert got.info.status == "FINISHED"
    for name in ("train", "valid"):
        steps, values = checks.history(run.info.run_id, f"{name}-binary_logloss")
        assert steps == list(range(20))
        assert values == pytest.approx(record[name]["binary_logloss"])
    params = got.data.params
    assert params["num_leaves"] == "7" and params["num_iterations"] == "20"
    assert params["min_data_in_leaf"] == "20" and params["lambda_l2"] == "0"  # defaults
    assert IMPORTANCE_FILES <= checks.artifacts(run.info.run_id)
    assert checks.artifact_json(run.info.run_id, "feature_importance.json")["split"] == {
        n: float(v) for n, v in zip(booster.feature_name(), booster.feature_importance("split"), strict=True)
    }
    assert checks.artifacts(run.info.run_id, "model") == {"model/model.txt", "model/mltrail_model.json"}
    loaded = mll.load_model(run.info.run_id)
    assert isinstance(loaded, lgb.Booster)
    assert np.allclose(loaded.predict(cancer["X_valid"]), booster.predict(cancer["X_valid"]))


def test_callback_starts_a_run_and_finish_ends_it(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _datasets(cancer)
    callback = mll.MLTrailCallback(log_models=False, importance_types=["gain"], log_every_n_steps=4)
    booster = lgb.train(PARAMS, dtrain, 10, valid_sets=[dvalid], callbacks=[callback])
    run = mltrail.active_run()
    assert run is not None  # started by the callback, open until finish()
    callback.finish(booster)
    assert mltrail.active_run() is None
    got = checks.run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert checks.history(run.info.run_id, "valid_0-binary_logloss")[0] == [0, 4, 8]
    files = checks.artifacts(run.info.run_id)
    assert set(checks.artifact_json(run.info.run_id, "feature_importance.json")) == {"gain"}
    assert "model" not in files


def test_callback_with_an_explicit_run_id_and_early_stopping(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _datasets(cancer)
    target = mltrail.Client().create_run("0", run_name="by-id")
    callback = mll.MLTrailCallback(run_id=target.info.run_id, log_models=False)
    booster = lgb.train({**PARAMS, "learning_rate": 0.5}, dtrain, 300, valid_sets=[dvalid],
                        callbacks=[callback, lgb.early_stopping(5, verbose=False)])
    callback.finish(booster)
    assert booster.current_iteration() < 300
    metrics = checks.run(target.info.run_id).data.metrics
    assert metrics["best_iteration"] == booster.best_iteration
    assert metrics["best_score"] == pytest.approx(booster.best_score["valid_0"]["binary_logloss"])
    assert metrics["stopped_iteration"] == booster.best_iteration - 1 + 5  # best index + patience
    steps, _ = checks.history(target.info.run_id, "valid_0-binary_logloss")
    assert steps == list(range(int(metrics["stopped_iteration"]) + 1))


def test_callback_copies_and_pickles_with_its_options_only(sqlite_uri: str) -> None:
    callback = mll.MLTrailCallback(log_every_n_steps=3, importance_types=["split"])
    for clone in (copy.deepcopy(callback), pickle.loads(pickle.dumps(callback))):
        assert type(clone) is mll.MLTrailCallback and clone.options == callback.options and not clone._run
    with pytest.raises(mltrail.InvalidValueError, match="importance_types"):
        mll.MLTrailCallback(importance_types=["cover"])
    with pytest.raises(mltrail.InvalidValueError, match="log_every_n_steps"):
        mll.MLTrailCallback(log_every_n_steps=-1)


def test_our_failures_in_the_callback_never_stop_training(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    dtrain, dvalid = _datasets(cancer)
    baseline = lgb.train(PARAMS, dtrain, 6, valid_sets=[dvalid]).predict(cancer["X_valid"])
    for point in ("before_training", "after_iteration", "after_training"):
        _safety.reset_warnings()
        callback = mll.MLTrailCallback()
        with non_strict(), pytest.warns(mltrail.autolog.AutologWarning, match=f"lightgbm: {point} failed") as caught:
            with inject_fault("lightgbm", point):
                booster = lgb.train(PARAMS, dtrain, 6, valid_sets=[dvalid], callbacks=[callback])
                callback.finish(booster)
        assert len([w for w in caught if issubclass(w.category, mltrail.autolog.AutologWarning)]) == 1
        assert np.allclose(booster.predict(cancer["X_valid"]), baseline)
        mltrail.end_run()
    with inject_fault("lightgbm", "after_iteration"), pytest.raises(InjectedFault):  # strict mode
        lgb.train(PARAMS, dtrain, 2, valid_sets=[dvalid], callbacks=[mll.MLTrailCallback()])
    mltrail.end_run()


# ---------------------------------------------------------------------- autolog: lightgbm.train
def test_autolog_train_with_early_stopping(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mll.autolog()
    dtrain, dvalid = _datasets(cancer)
    booster = lgb.train(
        {**PARAMS, "learning_rate": 0.5, "metric": ["binary_logloss", "auc"]}, dtrain, 300,
        valid_sets=[dtrain, dvalid], valid_names=["train", "valid"], callbacks=[lgb.early_stopping(5, verbose=False)],
    )
    assert mltrail.active_run() is None
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["num_boost_round"] == "300" and params["learning_rate"] == "0.5"
    assert params["metric"] == "['binary_logloss', 'auc']" and params["feature_fraction"] == "1"
    metrics = run.data.metrics
    assert metrics["best_iteration"] == booster.best_iteration
    assert metrics["best_score"] == pytest.approx(booster.best_score["valid"]["binary_logloss"])
    assert metrics["stopped_iteration"] == booster.best_iteration - 1 + 5
    for key in ("train-binary_logloss", "train-auc", "valid-binary_logloss", "valid-auc"):
        assert checks.history(run.info.run_id, key)[0] == list(range(int(metrics["stopped_iteration"]) + 1))
    contexts = {(d.tags["mltrail.data.context"], d.dataset.name): json.loads(d.dataset.profile)
                for d in run.inputs.dataset_inputs}
    assert contexts[("training", "train")]["num_rows"] == 400
    assert contexts[("evaluation", "valid")]["num_rows"] == 169
    assert IMPORTANCE_FILES <= checks.artifacts(run.info.run_id)
    meta = checks.artifact_json(run.info.run_id, "model/mltrail_model.json")
    assert meta["model_file"] == "model.txt" and meta["best_iteration"] == booster.best_iteration
    loaded = mll.load_model(run.info.run_id)
    assert np.allclose(loaded.predict(cancer["X_valid"]), booster.predict(cancer["X_valid"]))


def test_the_model_file_is_the_model_train_returned(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    """The model text is made in the background, except for a booster that can still train."""
    mll.autolog(importance_types=["split"])
    dtrain, dvalid = _datasets(cancer)
    gate = threading.Event()
    jobs.submit("test", "hold", None, lambda: gate.wait(30))  # the worker is busy: nothing is written yet
    kept = lgb.train(PARAMS, dtrain, 5, valid_sets=[dvalid], keep_training_booster=True)
    kept_run = mltrail.last_active_run().info.run_id
    kept.update()  # a sixth tree, before the background work has read the booster
    returned = lgb.train(PARAMS, dtrain, 4, valid_sets=[dvalid])
    returned_run = mltrail.last_active_run().info.run_id
    gate.set()
    for run_id, trees in ((kept_run, 5), (returned_run, 4)):
        loaded = mll.load_model(run_id)
        assert loaded.num_trees() == trees
        assert checks.artifact_json(run_id, "model/mltrail_model.json")["num_trees"] == trees
        assert checks.run(run_id).info.status == "FINISHED"
    np.testing.assert_allclose(mll.load_model(returned_run).predict(cancer["X_valid"]),
                               returned.predict(cancer["X_valid"]))


def test_autolog_train_ranking_with_options(sqlite_uri: str) -> None:
    X, y, groups = _ranking_data()
    Xv, yv, gv = _ranking_data(seed=1)
    mll.autolog(importance_types=["gain"], log_importance_plots=False, log_datasets=False,
                log_every_n_steps=2, extra_tags={"team": "search"})
    from lightgbm.engine import train

    dtrain = lgb.Dataset(X, y, group=groups)
    dvalid = lgb.Dataset(Xv, yv, group=gv, reference=dtrain)
    record: dict[str, Any] = {}
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [5], "num_threads": 1, "verbose": -1}
    # Every argument positional, callbacks included (their positions differ across LightGBM 4.x).
    signature = inspect.signature(train).parameters
    names = list(signature)
    defaults = [signature[n].default for n in names[5 : names.index("callbacks")]]
    train(params, dtrain, 7, [dvalid], ["valid"], *defaults, [lgb.record_evaluation(record)])
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.data.tags["team"] == "search"
    steps, values = checks.history(run.info.run_id, "valid-ndcg_at_5")
    assert steps == [0, 2, 4, 6]
    assert values == pytest.approx(record["valid"]["ndcg@5"][::2])
    files = checks.artifacts(run.info.run_id)
    assert "feature_importance.json" in files and "feature_importance.svg" not in files
    assert set(checks.artifact_json(run.info.run_id, "feature_importance.json")) == {"gain"}
    assert run.inputs.dataset_inputs == ()


def test_autolog_inside_the_users_run_and_a_second_training_goes_to_a_child(
    sqlite_uri: str, cancer: dict[str, Any]
) -> None:
    mll.autolog(log_models=False)
    dtrain, dvalid = _datasets(cancer)
    with mltrail.start_run() as parent:
        lgb.train(PARAMS, dtrain, 3, valid_sets=[dvalid])
        lgb.train({**PARAMS, "num_leaves": 15}, dtrain, 4, valid_sets=[dvalid])
    assert checks.run(parent.info.run_id).data.params["num_leaves"] == "7"
    assert "model" not in checks.artifacts(parent.info.run_id)
    children = [r for r in mltrail.search_runs(output_format="list") if r.parent_run_id == parent.info.run_id]
    assert [c.data.params["num_leaves"] for c in children] == ["15"]
    assert checks.history(children[0].info.run_id, "valid_0-binary_logloss")[0] == [0, 1, 2, 3]


def test_exclusive_leaves_the_users_run_alone(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mll.autolog(exclusive=True)
    dtrain, dvalid = _datasets(cancer)
    with mltrail.start_run() as run:
        lgb.train(PARAMS, dtrain, 3, valid_sets=[dvalid])
    got = checks.run(run.info.run_id)
    assert got.data.metrics == {} and got.data.params == {}


def test_user_callback_with_autolog_logs_once(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mll.autolog()
    dtrain, dvalid = _datasets(cancer)
    callback = mll.MLTrailCallback(log_models=False)
    booster = lgb.train(PARAMS, dtrain, 5, valid_sets=[dvalid], callbacks=[callback])
    callback.finish(booster)
    (only,) = mltrail.search_runs(output_format="list")
    assert checks.history(only.info.run_id, "valid_0-binary_logloss")[0] == [0, 1, 2, 3, 4]
    assert "mltrail.autolog" not in only.data.tags
    clf = lgb.LGBMClassifier(n_estimators=3, num_leaves=7, n_jobs=1, verbose=-1)
    fit_callback = mll.MLTrailCallback(log_models=False)
    clf.fit(cancer["X_train"], cancer["y_train"], callbacks=[fit_callback],
            **_eval_kwargs([(cancer["X_valid"], cancer["y_valid"])]))
    fit_callback.finish(clf.booster_)
    assert len(mltrail.search_runs(output_format="list")) == 2
    assert checks.history(mltrail.last_active_run().info.run_id, "valid_0-binary_logloss")[0] == [0, 1, 2]


# ---------------------------------------------------------------------- autolog: scikit-learn API
def test_autolog_classifier_with_early_stopping(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mll.autolog()
    clf = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.5, num_leaves=7, n_jobs=1, verbose=-1)
    clf.fit(cancer["X_train"], cancer["y_train"], callbacks=[lgb.early_stopping(5, verbose=False)],
            **_eval_kwargs([(cancer["X_valid"], cancer["y_valid"])]))
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["estimator_name"] == "LGBMClassifier"
    assert run.data.tags["estimator_class"] == "lightgbm.sklearn.LGBMClassifier"
    params = run.data.params
    assert params["n_estimators"] == "300" and params["learning_rate"] == "0.5" and params["num_leaves"] == "7"
    assert params["min_data_in_leaf"] == "20" and params["objective"] == "binary"  # from the booster
    steps, values = checks.history(run.info.run_id, "valid_0-binary_logloss")
    assert values == pytest.approx(clf.evals_result_["valid_0"]["binary_logloss"])
    assert steps == list(range(len(values)))
    assert run.data.metrics["best_iteration"] == clf.best_iteration_
    assert run.data.metrics["best_score"] == pytest.approx(clf.best_score_["valid_0"]["binary_logloss"])
    contexts = {(d.tags["mltrail.data.context"], d.dataset.name) for d in run.inputs.dataset_inputs}
    assert ("evaluation", "valid_0") in contexts and len(contexts) == 2
    assert checks.artifacts(run.info.run_id, "model") == {"model/model.txt", "model/model.pkl", "model/mltrail_model.json"}
    loaded = mll.load_model(run.info.run_id)
    assert type(loaded) is lgb.LGBMClassifier
    assert np.allclose(loaded.predict_proba(cancer["X_valid"]), clf.predict_proba(cancer["X_valid"]))
    booster = lgb.Booster(model_file=mltrail.Client().download_artifacts(run.info.run_id, "model/model.txt"))
    assert np.allclose(booster.predict(cancer["X_valid"]), clf.predict_proba(cancer["X_valid"])[:, 1])


def test_autolog_regressor_on_a_pandas_frame(sqlite_uri: str, diabetes: Any) -> None:
    X, y = diabetes
    mll.autolog()
    reg = lgb.LGBMRegressor(n_estimators=15, num_leaves=7, n_jobs=1, verbose=-1)
    reg.fit(X.iloc[:300], y.iloc[:300], **_eval_kwargs([(X.iloc[300:], y.iloc[300:])]))
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.data.tags["estimator_name"] == "LGBMRegressor"
    assert checks.history(run.info.run_id, "valid_0-l2")[0] == list(range(15))
    (train_input,) = [d for d in run.inputs.dataset_inputs if d.tags["mltrail.data.context"] == "training"]
    assert train_input.dataset.source_type == "pandas" and "bmi" in train_input.dataset.schema
    assert set(checks.artifact_json(run.info.run_id, "feature_importance.json")["gain"]) == set(X.columns)
    svg = Path(mltrail.Client().download_artifacts(run.info.run_id, "feature_importance.svg")).read_text()
    assert svg.startswith("<svg") and ">bmi<" in svg
    assert np.allclose(mll.load_model(run.info.run_id).predict(X.iloc[300:]), reg.predict(X.iloc[300:]))


def test_autolog_ranker_on_synthetic_groups(sqlite_uri: str) -> None:
    X, y, groups = _ranking_data()
    Xv, yv, gv = _ranking_data(seed=1)
    mll.autolog()
    ranker = lgb.LGBMRanker(n_estimators=6, num_leaves=7, n_jobs=1, verbose=-1)
    ranker.fit(X, y, group=groups, eval_group=[gv], eval_at=[3], **_eval_kwargs([(Xv, yv)]))
    (run,) = _autolog_runs()
    run = checks.run(run.info.run_id)
    assert run.data.tags["estimator_name"] == "LGBMRanker"
    steps, values = checks.history(run.info.run_id, "valid_0-ndcg_at_3")
    assert steps == list(range(6))
    assert values == pytest.approx(ranker.evals_result_["valid_0"]["ndcg@3"])
    assert run.data.params["objective"] == "lambdarank"
    assert np.allclose(mll.load_model(run.info.run_id).predict(Xv), ranker.predict(Xv))


def test_every_integration_on_still_gives_one_run_per_fit(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    """With mltrail.autolog() the scikit-learn integration leaves LightGBM's estimators to this one."""
    mltrail.autolog()
    lgb.LGBMClassifier(n_estimators=3, n_jobs=1, verbose=-1).fit(cancer["X_train"], cancer["y_train"])
    runs_ = mltrail.search_runs(output_format="list")
    assert [r.data.tags.get("mltrail.autolog") for r in runs_] == ["lightgbm"]
    assert "model" in checks.artifacts(runs_[0].info.run_id)


# ---------------------------------------------------------------------- the seven behaviours
def test_users_exception_propagates_and_the_run_fails(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mll.autolog()
    dtrain, dvalid = _datasets(cancer)

    def train_with(boom: Any) -> None:
        lgb.train(PARAMS, dtrain, 3, valid_sets=[dvalid], callbacks=[lambda env: boom()])

    check_user_exception(train_with)
    assert mltrail.last_active_run().info.status == "FAILED"

    def fit_with(boom: Any) -> None:
        lgb.LGBMClassifier(n_estimators=3, n_jobs=1, verbose=-1).fit(
            cancer["X_train"], cancer["y_train"], callbacks=[lambda env: boom()]
        )

    check_user_exception(fit_with)
    last = mltrail.last_active_run()
    assert last.info.status == "FAILED" and last.data.tags["estimator_name"] == "LGBMClassifier"


def test_our_failures_never_break_train(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mll.autolog()
    dtrain, dvalid = _datasets(cancer)
    points = check_fault_tolerance(
        lambda: lgb.train(PARAMS, dtrain, 4, valid_sets=[dvalid]).predict(cancer["X_valid"]).tolist(),
        integration="lightgbm",
    )
    assert points == ["after_iteration", "dataset", "importances", "model", "post", "pre", "run_end",
                      "run_start", "when"]  # dataset, importances, model: background steps


def test_our_failures_never_break_fit(sqlite_uri: str, cancer: dict[str, Any]) -> None:
    mll.autolog()
    X, y, groups = _ranking_data()
    check_fault_tolerance(
        lambda: lgb.LGBMClassifier(n_estimators=3, n_jobs=1, verbose=-1).fit(
            cancer["X_train"], cancer["y_train"], **_eval_kwargs([(cancer["X_valid"], cancer["y_valid"])])
        ).predict_proba(cancer["X_valid"]).tolist(),
        integration="lightgbm",
        expect_points={"when", "run_start", "pre", "after_iteration", "post", "run_end"},
    )
    check_fault_tolerance(
        lambda: lgb.LGBMRanker(n_estimators=3, n_jobs=1, verbose=-1).fit(X, y, group=groups).predict(X).tolist(),
        integration="lightgbm",
    )


DISABLE_SCRIPT = """
import mltrail, lightgbm as lgb
from lightgbm import engine as lgb_engine, sklearn as lsk
from mltrail.autolog import autolog_status
from mltrail.integrations import lightgbm as mll

originals = {
    (lgb, "train"): vars(lgb)["train"],
    (lgb_engine, "train"): vars(lgb_engine)["train"],
    (lsk.LGBMModel, "fit"): vars(lsk.LGBMModel)["fit"],
    (lsk.LGBMClassifier, "fit"): vars(lsk.LGBMClassifier)["fit"],
    (lsk.LGBMRegressor, "fit"): vars(lsk.LGBMRegressor)["fit"],
    (lsk.LGBMRanker, "fit"): vars(lsk.LGBMRanker)["fit"],
}
mll.autolog()
mll.autolog(importance_types=["gain"])  # again: the config changes, the wrappers stay
patched = autolog_status()["lightgbm"].patched
assert len(patched) == len(set(patched)), patched
assert {"lightgbm:train", "lightgbm.engine:train", "lightgbm.sklearn:LGBMModel.fit",
        "lightgbm.sklearn:LGBMClassifier.fit", "lightgbm.sklearn:LGBMRanker.fit"} <= set(patched), patched
for (owner, attr), original in originals.items():
    wrapper = vars(owner)[attr]
    assert wrapper is not original and wrapper.__wrapped__ is original, (owner, attr)  # one layer
mll.autolog(disable=True)
for (owner, attr), original in originals.items():
    assert vars(owner)[attr] is original, (owner, attr)
assert autolog_status()["lightgbm"].state == "off"
print("ok")
"""


def test_disable_restores_the_originals_and_twice_is_one_wrapper(tmp_path: Path) -> None:
    # A fresh interpreter: what other tests patched cannot leak into what this test reads.
    assert checks.run_script(DISABLE_SCRIPT, tmp_path) == "ok"


SCRIPT = """
import json, sys
import mltrail
BEFORE
mltrail.autolog()
AFTER
from sklearn.datasets import load_breast_cancer
X, y = load_breast_cancer(return_X_y=True)
d = lightgbm.Dataset(X, y)
lightgbm.train({"objective": "binary", "verbose": -1, "num_threads": 1}, d, 3, valid_sets=[d],
               valid_names=["train"])
lightgbm.LGBMClassifier(n_estimators=2, n_jobs=1, verbose=-1).fit(X, y)
mltrail.flush()
runs = mltrail.search_runs(output_format="list")
train_run = [r for r in runs if "estimator_name" not in r.data.tags][0]
print(json.dumps({"runs": sorted(r.data.tags.get("estimator_name", "train") for r in runs),
                  "steps": len(mltrail.Client().get_metric_history(train_run.info.run_id,
                                                                   "train-binary_logloss")),
                  "state": mltrail.autolog_status()["lightgbm"].state}))
"""


@pytest.mark.parametrize("order", ["autolog-first", "import-first"])
def test_both_import_orders(tmp_path: Path, order: str) -> None:
    out = checks.import_order_result(SCRIPT, "lightgbm", order, tmp_path)
    assert out == {"runs": ["LGBMClassifier", "train"], "steps": 3, "state": "active"}


def test_importing_the_integration_imports_no_lightgbm(tmp_path: Path) -> None:
    assert checks.state_without_import("lightgbm", "lightgbm", tmp_path) == "waiting"
