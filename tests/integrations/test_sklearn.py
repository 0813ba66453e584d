"""The scikit-learn integration, end to end, on real data (iris, digits, breast cancer, diabetes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sklearn = pytest.importorskip("sklearn")

import numpy as np  # noqa: E402
from sklearn import metrics  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.experimental import enable_halving_search_cv  # noqa: E402, F401
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    HalvingGridSearchCV,
    RandomizedSearchCV,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

import mltrail  # noqa: E402
from harness import check_fault_tolerance, check_user_exception  # noqa: E402
from mltrail.autolog import _safety, autolog_status, engine, runs  # noqa: E402
from mltrail.core.errors import InvalidValueError  # noqa: E402
from mltrail.integrations import sklearn as sk  # noqa: E402
from mltrail.integrations.sklearn import _metrics  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
# scikit-learn 1.4 passes L-BFGS-B's `iprint`, which newer SciPy deprecates (framework noise).
SCIPY_NOISE = "ignore:scipy.optimize:DeprecationWarning"
pytestmark = pytest.mark.filterwarnings(SCIPY_NOISE)


@pytest.fixture
def sqlite_uri(sqlite_uri: str) -> Iterator[str]:
    """The shared fixture, plus: our background work is done before its store is closed."""
    yield sqlite_uri
    sk.flush(timeout=60)


@pytest.fixture(autouse=True)
def _autolog_off() -> Iterator[None]:
    yield
    sk.flush(timeout=60)
    engine.disable_all()
    runs._reset_for_tests()
    _safety.reset_warnings()
    sk._reset_for_tests()


def _runs() -> list[Any]:
    sk.flush()
    mltrail.flush()
    return list(mltrail.search_runs(experiment_ids=["0"], output_format="list"))


def _only_run() -> Any:
    found = _runs()
    assert len(found) == 1, [r.data.tags.get("estimator_name") for r in found]
    return found[0]


def _artifacts(run_id: str, path: str | None = None) -> list[str]:
    sk.flush()
    return [f.path for f in mltrail.Client().list_artifacts(run_id, path)]


def _read_artifact(run_id: str, path: str, tmp_path: Path) -> bytes:
    local = mltrail.Client().download_artifacts(run_id, path, str(tmp_path / "dl"))
    return Path(local).read_bytes()


# ---------------------------------------------------------------------- pure helpers
def test_estimator_params_truncates_long_values_and_keeps_them_whole() -> None:
    est = LogisticRegression(C=0.5, class_weight={i: 1.0 + i / 1000 for i in range(200)})
    params, cut = sk.estimator_params(est, limit=100)
    assert params["C"] == "0.5" and params["max_iter"] == "100"
    assert len(params["class_weight"]) == 100 and params["class_weight"].endswith("...")
    assert cut == {"class_weight": str(est.class_weight)}
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=2.0))])
    params, _ = sk.estimator_params(pipe)
    assert params["clf__C"] == "2.0" and params["scale__with_mean"] == "True"


def test_estimator_tags_kind_and_fit_arguments() -> None:
    assert sk.estimator_tags(LogisticRegression()) == {
        "estimator_name": "LogisticRegression",
        "estimator_class": "sklearn.linear_model._logistic.LogisticRegression",
    }
    assert sk.estimator_kind(LogisticRegression()) == "classifier"
    assert sk.estimator_kind(Ridge()) == "regressor"
    assert sk.estimator_kind(KMeans()) == "clusterer"
    assert sk.estimator_kind(StandardScaler()) is None
    assert sk.estimator_kind(Pipeline([("s", StandardScaler()), ("r", Ridge())])) == "regressor"
    X, y, w = np.zeros((3, 2)), np.zeros(3), np.ones(3)
    assert sk.fit_arguments(LogisticRegression(), "fit", (X, y, w), {}) == (X, y, w)
    assert sk.fit_arguments(LogisticRegression(), "fit", (X,), {"y": y, "sample_weight": w}) == (X, y, w)
    assert sk.fit_arguments(KMeans(), "fit_predict", (X,), {}) == (X, None, None)

    class TakesFitParams(BaseEstimator):
        def fit(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
            return self

    assert sk.fit_arguments(TakesFitParams(), "fit", (X, y), {"sample_weight": w}) == (X, y, w)
    assert sk.fit_arguments(TakesFitParams(), "fit", (), {"X": X}) == (X, None, None)


@pytest.mark.parametrize("make", [
    lambda: LogisticRegression(C=2.0),
    lambda: __import__("sklearn.ensemble", fromlist=["BaggingClassifier"]).BaggingClassifier(
        estimator=LogisticRegression(C=3.0), n_estimators=4),
    lambda: GridSearchCV(Pipeline([("s", StandardScaler()), ("m", Ridge(alpha=0.5))]), {"m__alpha": [1.0]}),
])
def test_params_are_what_get_params_deep_says(make: Any) -> None:
    # Read with each class's parameter names cached: the same answer as scikit-learn's own.
    estimator = make()
    expected = {k: str(v) for k, v in estimator.get_params(deep=True).items()}
    assert sk.estimator_params(estimator, limit=100_000)[0] == expected
    assert sk.estimator_params(make(), limit=100_000)[0] == expected  # again, from the cache


def test_caller_variable_finds_the_users_name() -> None:
    X_holdout = np.arange(6.0).reshape(3, 2)
    assert sk.caller_variable(X_holdout) == "X_holdout"
    assert sk.caller_variable(np.zeros(2)) is None


@pytest.mark.parametrize("data", ["iris", "breast_cancer", "digits"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fast_classifier_metrics_equal_sklearns(data: str, weighted: bool) -> None:
    X, y = {"iris": load_iris, "breast_cancer": load_breast_cancer, "digits": load_digits}[data](return_X_y=True)
    X = StandardScaler().fit_transform(X)
    model = LogisticRegression(max_iter=2000).fit(X, y)
    y_pred, proba = model.predict(X), model.predict_proba(X)
    w = np.random.default_rng(0).uniform(0.2, 3.0, len(y)) if weighted else None
    report = _metrics.classifier_report(y, y_pred, model.classes_, proba=proba, sample_weight=w)
    assert report is not None
    binary = proba.shape[1] == 2
    expected = {
        "accuracy_score": metrics.accuracy_score(y, y_pred, sample_weight=w),
        "precision_score": metrics.precision_score(y, y_pred, average="weighted", sample_weight=w, zero_division=0),
        "recall_score": metrics.recall_score(y, y_pred, average="weighted", sample_weight=w),
        "f1_score": metrics.f1_score(y, y_pred, average="weighted", sample_weight=w),
        "log_loss": metrics.log_loss(y, proba, sample_weight=w),
        "roc_auc": metrics.roc_auc_score(y, proba[:, 1] if binary else proba, multi_class="ovr",
                                         average="weighted", sample_weight=w),
    }
    for key, value in expected.items():
        assert report.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    np.testing.assert_allclose(report.confusion, metrics.confusion_matrix(y, y_pred, sample_weight=w))
    if binary:
        assert report.pr[0].area == pytest.approx(metrics.average_precision_score(y, proba[:, 1], sample_weight=w))


def test_fast_metrics_decline_what_they_do_not_cover() -> None:
    classes = np.array([0, 1, 2])
    assert _metrics.classifier_report(np.array([0, 5]), np.array([0, 1]), classes) is None
    assert _metrics.classifier_report(np.ones((4, 3)), np.ones((4, 3)), classes) is None
    labels = np.array(["b", "a", "b"], dtype=object)
    report = _metrics.classifier_report(labels, labels, np.array(["a", "b"], dtype=object))
    assert report is not None and report.metrics["accuracy_score"] == 1.0


def test_fast_regressor_metrics_and_silhouette_equal_sklearns() -> None:
    X, y = load_diabetes(return_X_y=True)
    pred = Ridge().fit(X, y).predict(X)
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    for weight in (None, w):
        got = _metrics.regressor_metrics(y, pred, sample_weight=weight)
        assert got is not None
        assert got["mean_squared_error"] == pytest.approx(metrics.mean_squared_error(y, pred, sample_weight=weight))
        assert got["mean_absolute_error"] == pytest.approx(metrics.mean_absolute_error(y, pred, sample_weight=weight))
        assert got["r2_score"] == pytest.approx(metrics.r2_score(y, pred, sample_weight=weight))
        assert got["root_mean_squared_error"] == pytest.approx(
            np.sqrt(metrics.mean_squared_error(y, pred, sample_weight=weight)))
    two = np.c_[y, 2 * y]
    got = _metrics.regressor_metrics(two, np.c_[pred, pred], sample_weight=None)
    assert got is not None and got["r2_score"] == pytest.approx(metrics.r2_score(two, np.c_[pred, pred]))
    X, _ = load_iris(return_X_y=True)
    labels = KMeans(3, n_init=2, random_state=0).fit(X).labels_
    assert _metrics.silhouette(X, labels, sample_size=1000) == pytest.approx(metrics.silhouette_score(X, labels))
    assert _metrics.silhouette(X, np.zeros(len(X))) is None


def test_predictions_read_off_probabilities_equal_predict() -> None:
    import importlib

    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import BaggingClassifier, ExtraTreesClassifier, HistGradientBoostingClassifier
    from sklearn.tree import DecisionTreeClassifier

    for path in sk._PREDICT_IS_ARGMAX_PROBA:
        module, name = path.rsplit(".", 1)
        assert "predict" in vars(getattr(importlib.import_module(module), name)), path
    X, y = load_iris(return_X_y=True)
    for est in (RandomForestClassifier(10, random_state=0), ExtraTreesClassifier(10, random_state=0),
                BaggingClassifier(n_estimators=5, random_state=0), HistGradientBoostingClassifier(max_iter=10),
                DecisionTreeClassifier(max_depth=4, random_state=0),
                CalibratedClassifierCV(LogisticRegression(max_iter=1000), cv=2)):
        est.fit(X, y)
        derived = sk._predict_from_proba(est, est.classes_, est.predict_proba(X))
        assert derived is not None, type(est).__name__
        np.testing.assert_array_equal(derived, est.predict(X))
    assert sk._predict_from_proba(LogisticRegression(), np.array([0, 1]), np.ones((2, 2))) is None


def test_cv_results_csv_and_best_candidates() -> None:
    X, y = load_iris(return_X_y=True)
    search = GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.01, 0.1, 1.0]}, cv=3).fit(X, y)
    text = sk.cv_results_csv(search.cv_results_)
    lines = text.strip().splitlines()
    assert len(lines) == 4 and lines[0].split(",")[:2] == ["mean_fit_time", "std_fit_time"]
    best = sk.best_candidates(search.cv_results_, 2)
    assert best[0][1] == {"C": str(search.best_params_["C"])}
    assert len(best) == 2 and best[0][2]["rank_test_score"] == 1.0
    assert best[0][2]["mean_test_score"] == pytest.approx(search.best_score_)
    assert len(sk.best_candidates(search.cv_results_, None)) == 3
    assert sk.best_candidates(search.cv_results_, 0) == []
    multi = GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.001, 1.0]}, cv=3,
                         scoring=["accuracy", "neg_log_loss"], refit="neg_log_loss").fit(X, y)
    best = sk.best_candidates(multi.cv_results_, 1, "neg_log_loss")
    assert best[0][0] == multi.best_index_
    assert {"mean_test_accuracy", "mean_test_neg_log_loss", "rank_test_neg_log_loss"} <= set(best[0][2])


def test_cross_validation_metrics_helper() -> None:
    per_fold, summary = sk.cross_validation_metrics(np.array([0.5, 1.0]), "accuracy")
    assert per_fold == {"test_accuracy": [0.5, 1.0]}
    assert summary == {"mean_test_accuracy": 0.75, "std_test_accuracy": 0.25}
    per_fold, _ = sk.cross_validation_metrics({"test_score": [1.0], "fit_time": [0.1], "estimator": [object()]})
    assert set(per_fold) == {"test_score", "fit_time"}


def test_config_is_checked() -> None:
    with pytest.raises(InvalidValueError, match="max_tuning_runs"):
        sk.Config(max_tuning_runs=-1)
    with pytest.raises(InvalidValueError, match="serialization_format"):
        sk.Config(serialization_format="json")


# ---------------------------------------------------------------------- what is logged
def test_classifier_fit_logs_params_metrics_plots_model_and_input(sqlite_uri: str, tmp_path: Path) -> None:
    mltrail.autolog()
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(C=0.5, max_iter=1000).fit(X, y)
    run = _only_run()
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.autolog"] == "sklearn"
    assert run.data.tags["estimator_name"] == "LogisticRegression"
    assert run.data.tags["estimator_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert run.data.params["C"] == "0.5" and run.data.params["max_iter"] == "1000"
    assert set(run.data.params) == set(model.get_params())
    m = run.data.metrics
    assert m["training_accuracy_score"] == pytest.approx(metrics.accuracy_score(y, model.predict(X)))
    assert m["training_score"] == pytest.approx(model.score(X, y))
    assert m["training_log_loss"] == pytest.approx(metrics.log_loss(y, model.predict_proba(X)))
    assert m["training_roc_auc"] == pytest.approx(
        metrics.roc_auc_score(y, model.predict_proba(X), multi_class="ovr", average="weighted"))
    assert {"training_precision_score", "training_recall_score", "training_f1_score"} <= set(m)
    assert m["fit_duration_s"] > 0
    files = _artifacts(run.info.run_id)
    for name in ("training_confusion_matrix.png", "training_roc_curve.png", "training_precision_recall_curve.png"):
        assert name in files
        assert _read_artifact(run.info.run_id, name, tmp_path).startswith(PNG)
    assert set(_artifacts(run.info.run_id, "model")) == {"model/model.pkl", "model/mltrail_model.json"}
    loaded = mltrail.sklearn.load_model(run.info.run_id)
    assert type(loaded) is LogisticRegression
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    meta = json.loads(_read_artifact(run.info.run_id, "model/mltrail_model.json", tmp_path))
    assert meta["flavor"] == "sklearn" and meta["sklearn_version"] == sklearn.__version__
    assert ("X", "training") in _dataset_names(run.info.run_id)


def _dataset_names(run_id: str) -> list[tuple[str, str | None]]:
    """(dataset name, context) of a run's inputs."""
    sk.flush()
    run = mltrail.get_run(run_id)
    return [(i.dataset.name, i.tags.get("mltrail.data.context")) for i in run.inputs.dataset_inputs]


def test_sample_weight_is_honoured(sqlite_uri: str) -> None:
    mltrail.autolog()
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    w = np.where(y == 1, 3.0, 0.5)
    model = LogisticRegression(C=0.05).fit(X, y, sample_weight=w)
    m = _only_run().data.metrics
    pred = model.predict(X)
    assert m["training_accuracy_score"] == pytest.approx(metrics.accuracy_score(y, pred, sample_weight=w))
    assert m["training_accuracy_score"] != pytest.approx(metrics.accuracy_score(y, pred))
    assert m["training_f1_score"] == pytest.approx(metrics.f1_score(y, pred, average="weighted", sample_weight=w))
    assert m["training_score"] == pytest.approx(model.score(X, y, sample_weight=w))


def test_regressor_metrics(sqlite_uri: str) -> None:
    mltrail.autolog()
    X, y = load_diabetes(return_X_y=True)
    model = Ridge(alpha=0.3).fit(X, y)
    run = _only_run()
    pred = model.predict(X)
    m = run.data.metrics
    assert m["training_mean_squared_error"] == pytest.approx(metrics.mean_squared_error(y, pred))
    assert m["training_root_mean_squared_error"] == pytest.approx(np.sqrt(metrics.mean_squared_error(y, pred)))
    assert m["training_mean_absolute_error"] == pytest.approx(metrics.mean_absolute_error(y, pred))
    assert m["training_r2_score"] == pytest.approx(metrics.r2_score(y, pred))
    assert m["training_score"] == pytest.approx(model.score(X, y))
    assert "training_confusion_matrix.png" not in _artifacts(run.info.run_id)


def test_clusterer_fit_predict_and_transformer_fit_transform(sqlite_uri: str) -> None:
    mltrail.autolog()
    X, _ = load_digits(return_X_y=True)
    labels = KMeans(n_clusters=10, n_init=2, random_state=0).fit_predict(X)
    reduced = PCA(n_components=5).fit_transform(X)
    assert reduced.shape == (len(X), 5) and labels.shape == (len(X),)
    found = {r.data.tags["estimator_name"]: r for r in _runs()}
    assert set(found) == {"KMeans", "PCA"}
    km = found["KMeans"].data.metrics
    assert km["training_inertia"] > 0
    assert -1 <= km["training_silhouette_score"] <= 1
    assert found["PCA"].data.params["n_components"] == "5"
    assert not any(k.startswith("training_") for k in found["PCA"].data.metrics)


def test_pandas_frame_through_a_column_transformer_pipeline_is_one_run(sqlite_uri: str) -> None:
    pd = pytest.importorskip("pandas")
    mltrail.autolog()
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    frame = X.iloc[:, :5].copy()
    frame["size"] = pd.Categorical(np.where(frame.iloc[:, 0] > frame.iloc[:, 0].median(), "large", "small"))
    pipe = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), list(frame.columns[:5])),
            ("cat", OneHotEncoder(), ["size"]),
        ])),
        ("clf", LogisticRegression(C=0.7, max_iter=500)),
    ])
    pipe.fit(frame, y)
    run = _only_run()
    assert run.data.tags["estimator_name"] == "Pipeline"
    p = run.data.params
    assert p["clf__C"] == "0.7" and p["prep__num__with_mean"] == "True" and p["prep__cat__drop"] == "None"
    assert run.data.metrics["training_accuracy_score"] == pytest.approx(pipe.score(frame, y))
    assert ("frame", "training") in _dataset_names(run.info.run_id)
    loaded = mltrail.sklearn.load_model(run.info.run_id)
    np.testing.assert_array_equal(loaded.predict(frame), pipe.predict(frame))


def test_grid_search_is_a_parent_with_the_best_candidates_as_children(sqlite_uri: str, tmp_path: Path) -> None:
    mltrail.autolog()
    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 0.1, 1.0], "fit_intercept": [True, False]}
    search = GridSearchCV(LogisticRegression(max_iter=500), grid, cv=3).fit(X, y)
    found = _runs()
    parents = [r for r in found if "mltrail.parentRunId" not in r.data.tags]
    children = [r for r in found if "mltrail.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 5
    parent = parents[0]
    assert all(c.data.tags["mltrail.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.tags["estimator_name"] == "GridSearchCV"
    assert parent.data.params["best_C"] == str(search.best_params_["C"])
    assert parent.data.params["estimator__max_iter"] == "500"
    assert parent.data.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    assert parent.data.metrics["training_accuracy_score"] == pytest.approx(search.score(X, y))
    ranks = sorted(c.data.metrics["rank_test_score"] for c in children)
    assert ranks == sorted(search.cv_results_["rank_test_score"])[:5]
    best_child = min(children, key=lambda c: c.data.metrics["rank_test_score"])
    assert best_child.data.metrics["mean_test_score"] == pytest.approx(search.best_score_)
    assert set(best_child.data.params) == {"C", "fit_intercept"}
    assert all(c.info.status == "FINISHED" for c in children)
    csv_text = _read_artifact(parent.info.run_id, "cv_results.csv", tmp_path).decode()
    assert len(csv_text.strip().splitlines()) == 7
    assert type(mltrail.sklearn.load_model(parent.info.run_id)) is GridSearchCV
    assert type(mltrail.sklearn.load_model(parent.info.run_id, "best_estimator")) is LogisticRegression


def test_randomized_and_halving_searches(sqlite_uri: str) -> None:
    sk.autolog(max_tuning_runs=None, log_plots=False)
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    RandomizedSearchCV(LogisticRegression(), {"C": [0.01, 0.1, 1.0, 10.0]}, n_iter=3, cv=3,
                       random_state=0).fit(X, y)
    found = _runs()
    assert len(found) == 4  # the parent and all three candidates
    for run in found:
        mltrail.Client().delete_run(run.info.run_id)
    sk.autolog(max_tuning_runs=2)
    HalvingGridSearchCV(RandomForestClassifier(n_estimators=5, random_state=0),
                        {"max_depth": [2, 4, 8, None]}, cv=3, random_state=0).fit(X, y)
    found = _runs()
    assert sorted("mltrail.parentRunId" in r.data.tags for r in found) == [False, True, True]
    parent = next(r for r in found if "mltrail.parentRunId" not in r.data.tags)
    assert parent.data.tags["estimator_name"] == "HalvingGridSearchCV"


def test_cross_validate_and_cross_val_score_are_one_run_each(sqlite_uri: str) -> None:
    import sklearn.model_selection as ms

    mltrail.autolog()
    X, y = load_iris(return_X_y=True)
    scores = ms.cross_val_score(LogisticRegression(max_iter=500), X, y, cv=4, scoring="accuracy")
    found = _runs()
    assert len(found) == 1
    run = found[0]
    assert run.data.tags["cross_validation"] == "cross_val_score"
    assert run.data.params["cv"] == "4" and run.data.params["scoring"] == "accuracy"
    history = mltrail.Client().get_metric_history(run.info.run_id, "test_accuracy")
    assert list(history.steps) == [0, 1, 2, 3]
    np.testing.assert_allclose(history.values, scores)
    assert run.data.metrics["mean_test_accuracy"] == pytest.approx(scores.mean())
    mltrail.Client().delete_run(run.info.run_id)
    result = ms.cross_validate(Ridge(), *load_diabetes(return_X_y=True), cv=3, return_train_score=True)
    found = _runs()
    assert len(found) == 1
    m = found[0].data.metrics
    assert m["mean_test_score"] == pytest.approx(result["test_score"].mean())
    assert m["mean_train_score"] == pytest.approx(result["train_score"].mean())
    assert "mean_fit_time" in m and "cv_duration_s" in m
    mltrail.Client().delete_run(found[0].info.run_id)
    # Bound by `from ... import` before autolog(): the cross_validate it calls is still seen.
    scores = cross_val_score(Ridge(), *load_diabetes(return_X_y=True), cv=3)
    found = _runs()
    assert len(found) == 1 and found[0].data.tags["cross_validation"] == "cross_validate"
    assert found[0].data.metrics["mean_test_score"] == pytest.approx(scores.mean())


def test_post_training_metrics_go_to_the_models_run(sqlite_uri: str) -> None:
    mltrail.autolog()
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = LogisticRegression().fit(X_train, y_train)
    acc = metrics.accuracy_score(y_test, model.predict(X_test))
    auc = metrics.roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    f1_macro = metrics.f1_score(y_test, model.predict(X_test), average="macro")
    score = model.score(X_test, y_test)
    metrics.accuracy_score(y_test, np.ones_like(y_test))  # not a prediction of the model
    LogisticRegression().fit(X_test, y_test)  # another model: its predictions are not model's
    first = min(_runs(), key=lambda r: r.info.start_time)
    m = first.data.metrics
    assert m["accuracy_score_X_test"] == pytest.approx(acc)
    assert m["roc_auc_score_X_test"] == pytest.approx(auc)
    assert m["f1_score_X_test"] == pytest.approx(f1_macro)
    assert m["LogisticRegression_score_X_test"] == pytest.approx(score)
    assert not any("accuracy_score" in k and "X_test" not in k for k in m if not k.startswith("training_"))
    # A second metric call with other options gets its own name; the same again, the next step.
    metrics.f1_score(y_test, model.predict(X_test), average="micro")
    metrics.f1_score(y_test, model.predict(X_test), average="micro")
    mltrail.flush()
    sk.flush()
    history = mltrail.Client().get_metric_history(first.info.run_id, "f1_score-2_X_test")
    assert list(history.steps) == [0, 1]


def test_post_training_metrics_in_the_users_run(sqlite_uri: str) -> None:
    mltrail.autolog()
    X, y = load_iris(return_X_y=True)
    with mltrail.start_run() as run:
        model = LogisticRegression(max_iter=500).fit(X, y)
        X_eval = X[::2]
        metrics.accuracy_score(y[::2], model.predict(X_eval))
    assert _only_run().data.metrics["accuracy_score_X_eval"] == pytest.approx(
        metrics.accuracy_score(y[::2], model.predict(X_eval)))
    assert run.info.run_id == _only_run().info.run_id


def test_second_fit_in_a_user_run_goes_to_a_child_run(sqlite_uri: str) -> None:
    mltrail.autolog()
    X, y = load_iris(return_X_y=True)
    with mltrail.start_run() as run:
        LogisticRegression(C=1.0, max_iter=500).fit(X, y)
        LogisticRegression(C=2.0, max_iter=500).fit(X, y)
    found = _runs()
    assert len(found) == 2
    user = next(r for r in found if r.info.run_id == run.info.run_id)
    child = next(r for r in found if r.info.run_id != run.info.run_id)
    assert user.data.params["C"] == "1.0" and user.info.status == "FINISHED"
    assert child.data.params["C"] == "2.0" and child.data.tags["mltrail.parentRunId"] == run.info.run_id


def test_exclusive_leaves_the_users_run_alone(sqlite_uri: str) -> None:
    sk.autolog(exclusive=True)
    X, y = load_iris(return_X_y=True)
    with mltrail.start_run() as run:
        LogisticRegression(max_iter=500).fit(X, y)
    assert _only_run().data.params == {}
    assert _only_run().info.run_id == run.info.run_id


def test_meta_estimator_inner_fits_and_super_calls_are_not_logged_twice(sqlite_uri: str) -> None:
    mltrail.autolog()

    class Scaled(LogisticRegression):  # defined after autolog(): patched on definition
        def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Scaled:
            return super().fit(X * 1.0, y, sample_weight=sample_weight)

    X, y = load_iris(return_X_y=True)
    Scaled(max_iter=500).fit(X, y)
    Pipeline([("s", StandardScaler()), ("lr", Scaled(max_iter=500))]).fit(X, y)
    names = sorted(r.data.tags["estimator_name"] for r in _runs())
    assert names == ["Pipeline", "Scaled"]


def test_standalone_preprocessing_is_left_out_unless_asked(sqlite_uri: str) -> None:
    mltrail.autolog()
    X, _ = load_iris(return_X_y=True)
    StandardScaler().fit_transform(X)
    assert _runs() == []
    sk.autolog(log_preprocessing=True)
    StandardScaler().fit(X)
    assert _only_run().data.tags["estimator_name"] == "StandardScaler"


def test_third_party_estimator_defined_later(sqlite_uri: str) -> None:
    mltrail.autolog()

    class Majority(ClassifierMixin, BaseEstimator):
        def __init__(self, bias: float = 0.0) -> None:
            self.bias = bias

        def fit(self, X: Any, y: Any) -> Majority:
            self.classes_, counts = np.unique(y, return_counts=True)
            self.majority_ = self.classes_[np.argmax(counts)]
            return self

        def predict(self, X: Any) -> Any:
            return np.full(len(X), self.majority_)

    X, y = load_breast_cancer(return_X_y=True)
    Majority(bias=0.5).fit(X, y)
    run = _only_run()
    assert run.data.params == {"bias": "0.5"}
    assert run.data.metrics["training_accuracy_score"] == pytest.approx(np.mean(y == 1))


def test_the_training_data_is_never_copied(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Other threads allocate too while tracemalloc watches: keep them quiet (no git diff, no plots).
    monkeypatch.setenv("MLTRAIL_CAPTURE_GIT", "false")
    sk.autolog(log_plots=False)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 200))  # 32 MB
    y = (X[:, 0] > 0).astype(int)
    from sklearn.dummy import DummyClassifier

    DummyClassifier().fit(X, y)  # warm up imports and caches
    tracemalloc.start()
    try:
        DummyClassifier().fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 4, f"peak {peak / 1e6:.1f} MB while fitting on {X.nbytes / 1e6:.0f} MB"
    assert len(_runs()) == 2


# ---------------------------------------------------------------------- the seven behaviours
def test_users_exception_propagates_and_the_run_fails(sqlite_uri: str) -> None:
    mltrail.autolog()

    class Exploding(BaseEstimator):
        def __init__(self, boom: Any = None) -> None:
            self.boom = boom

        def fit(self, X: Any, y: Any = None) -> Exploding:
            self.boom()
            return self

    check_user_exception(lambda boom: Exploding(boom).fit(np.zeros((3, 2))))
    found = _runs()
    assert found and all(r.info.status == "FAILED" for r in found)
    assert mltrail.active_run() is None


def _fault_check(call: Any, **kwargs: Any) -> list[str]:
    call()  # first use may define classes (a "subclass" hook point a second call never reaches)
    return check_fault_tolerance(call, integration="sklearn", **kwargs)


@pytest.fixture
def quiet_autolog(sqlite_uri: str) -> Any:
    sk.autolog(log_plots=False)  # plots are drawn on the background thread: not a step of the call
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_our_failures_never_break_fit(quiet_autolog: Any) -> None:
    X, y = quiet_autolog
    points = _fault_check(
        lambda: LogisticRegression(max_iter=300).fit(X, y).predict(X).tolist(),
        expect_points={"when", "run_start", "pre", "post", "training_metrics", "model", "dataset", "run_end"},
    )
    assert "subclass" not in points


def test_our_failures_never_break_fit_transform_and_fit_predict(quiet_autolog: Any) -> None:
    X, _ = quiet_autolog
    _fault_check(lambda: PCA(2).fit_transform(X).round(6).tolist(), expect_points={"pre", "post"})
    _fault_check(lambda: KMeans(3, n_init=1, random_state=0).fit_predict(X).tolist(),
                 expect_points={"pre", "post", "training_metrics"})


def test_our_failures_never_break_searches_and_cross_validation(quiet_autolog: Any) -> None:
    import sklearn.model_selection as ms

    X, y = quiet_autolog
    _fault_check(
        lambda: GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=2).fit(X, y).best_params_,
        expect_points={"search", "post"},
    )
    _fault_check(lambda: ms.cross_val_score(Ridge(), X, y, cv=2).round(9).tolist(),
                 expect_points={"pre", "post", "dataset"})


def test_our_failures_never_break_post_training_metrics(quiet_autolog: Any) -> None:
    X, y = quiet_autolog
    model = LogisticRegression(max_iter=300).fit(X, y)
    _fault_check(lambda: metrics.accuracy_score(y, model.predict(X)), expect_points={"when", "post"})
    _fault_check(lambda: model.score(X, y), expect_points={"when", "post"})


def _originals() -> dict[tuple[type, str], Any]:
    from sklearn.base import ClassifierMixin as CM
    from sklearn.base import TransformerMixin

    slots = [
        (LogisticRegression, "fit"), (Pipeline, "fit"), (KMeans, "fit"), (PCA, "fit_transform"),
        (TransformerMixin, "fit_transform"), (CM, "score"), (LogisticRegression, "predict_proba"),
    ]
    return {(owner, attr): vars(owner)[attr] for owner, attr in slots}


def test_disable_restores_every_original_and_autolog_twice_wraps_once(sqlite_uri: str) -> None:
    before = _originals()
    import sklearn.model_selection as ms

    cv_before = vars(ms)["cross_val_score"], vars(metrics)["accuracy_score"]
    mltrail.autolog()
    mltrail.autolog()
    for (owner, attr), original in before.items():
        assert vars(owner)[attr] is not original
        assert vars(owner)[attr].__wrapped__ is original, (owner, attr)
    status = autolog_status()["sklearn"]
    assert status.state == "active" and len(status.patched) == len(set(status.patched))
    mltrail.autolog(disable=True)
    for (owner, attr), original in before.items():
        assert vars(owner)[attr] is original, (owner, attr)
    assert (vars(ms)["cross_val_score"], vars(metrics)["accuracy_score"]) == cv_before
    assert "__init_subclass__" not in vars(BaseEstimator)
    X, y = load_iris(return_X_y=True)
    LogisticRegression(max_iter=300).fit(X, y)
    assert _runs() == []


SCRIPT = """
import json, sys
import mltrail
BEFORE
mltrail.autolog()
AFTER
import sklearn.metrics
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(X, y)
X_test = X[::3]
sklearn.metrics.accuracy_score(y[::3], model.predict(X_test))
GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
mltrail.sklearn.flush()
mltrail.flush()
runs = mltrail.search_runs(output_format="list")
print(json.dumps({
    "names": sorted(r.data.tags.get("estimator_name", "") for r in runs),
    "post": sorted(k for r in runs for k in r.data.metrics if k.endswith("_X_test")),
    "state": mltrail.autolog_status()["sklearn"].state,
}))
"""


@pytest.mark.parametrize("order", ["autolog-first", "import-first"])
def test_both_import_orders(tmp_path: Path, order: str) -> None:
    if order == "autolog-first":
        before, after = "assert 'sklearn' not in sys.modules", ""
    else:
        before, after = "import sklearn.linear_model, sklearn.metrics", ""
    script = SCRIPT.replace("BEFORE", before).replace("AFTER", after)
    env = dict(os.environ, MLTRAIL_AUTOLOG_STRICT="1", MLTRAIL_TRACKING_URI=str(tmp_path / "store"))
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-W", SCIPY_NOISE, "-c", textwrap.dedent(script)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "names": ["GridSearchCV", "GridSearchCV", "GridSearchCV", "LogisticRegression"],
        "post": ["accuracy_score_X_test"],
        "state": "active",
    }


MAIN_CLASS_SCRIPT = """
import json, sys
import mltrail
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

CALLS = []
THRESHOLD = {"value": 0.5}


class Counted(LogisticRegression):  # a user's class in __main__, as in a notebook
    def fit(self, X, y, sample_weight=None):
        CALLS.append(THRESHOLD["value"])
        return super().fit(X, y, sample_weight)


mltrail.autolog()
X, y = load_iris(return_X_y=True)
first = Counted(max_iter=500).fit(X, y)
mltrail.flush()                  # the background work has loaded the model's snapshot back
THRESHOLD["value"] = 0.9
Counted(max_iter=500).fit(X, y)
mltrail.flush()
print(json.dumps({"calls": CALLS, "run": mltrail.last_active_run().info.run_id,
                  "patched": type(vars(Counted)["fit"]).__name__}))
"""


def test_a_class_defined_in_main_keeps_its_methods_and_its_model_loads_elsewhere(tmp_path: Path) -> None:
    # cloudpickle writes a __main__ class by value; loading such a pickle back in the process that
    # defined the class would reset the class's methods to copies bound to stale globals.
    env = dict(os.environ, MLTRAIL_AUTOLOG_STRICT="1", MLTRAIL_TRACKING_URI=str(tmp_path / "store"))
    script = tmp_path / "train.py"
    script.write_text(MAIN_CLASS_SCRIPT)
    proc = subprocess.run([sys.executable, "-W", SCIPY_NOISE, str(script)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["calls"] == [0.5, 0.9]  # the second fit ran the user's method, with live globals
    assert out["patched"] == "PatchWrapper"  # and autolog still wraps it
    mltrail.set_tracking_uri(str(tmp_path / "store"))
    # This process has no __main__.Counted: the file carries the class by value.
    loaded = mltrail.sklearn.load_model(out["run"])
    assert type(loaded).__name__ == "Counted"
    X, y = load_iris(return_X_y=True)
    assert loaded.score(X, y) > 0.9


def test_a_model_only_cloudpickle_can_write_is_logged_and_its_class_left_alone(sqlite_uri: str) -> None:
    calls: list[int] = []

    class Local(LogisticRegression):  # defined in a function: the standard pickler refuses it
        def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Any:
            calls.append(1)
            return super().fit(X, y, sample_weight)

    fit_method = vars(Local)["fit"]
    mltrail.autolog()
    X, y = load_iris(return_X_y=True)
    model = Local(max_iter=500).fit(X, y)
    sk.flush()
    run = mltrail.last_active_run()
    assert vars(Local)["fit"].__wrapped__ is fit_method
    Local(max_iter=500).fit(X, y)
    sk.flush()
    assert len(calls) == 2  # the closure the second fit appended to is the test's own
    assert run.data.metrics["training_accuracy_score"] == pytest.approx(model.score(X, y))
    loaded = mltrail.sklearn.load_model(run.info.run_id)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
