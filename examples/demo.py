"""mltrail demo: a few small training loops recorded into the embedded default store.

Run from the repository root (after ``pip install -e .``)::

    python examples/demo.py

It trains logistic-regression models with plain numpy gradient descent on a synthetic problem,
one run per learning rate inside a parent run, then prints what was recorded. Everything lands
in ``./mltrail-runs`` unless ``MLTRAIL_TRACKING_URI`` says otherwise; afterwards try
``mltrail runs ls --experiment demo`` and ``mltrail runs show <run id>``.
"""

from __future__ import annotations

import numpy as np

import mltrail


def make_data(n: int = 2000, d: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    y = (X @ w + 0.5 * rng.normal(size=n) > 0).astype(np.float64)
    return X, y


def train(X: np.ndarray, y: np.ndarray, lr: float, epochs: int, batch: int = 100) -> float:
    """Mini-batch gradient descent on the logistic loss; logs loss/accuracy as it goes."""
    rng = np.random.default_rng(1)
    w = np.zeros(X.shape[1])
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            p = 1 / (1 + np.exp(-(X[idx] @ w)))
            w -= lr * X[idx].T @ (p - y[idx]) / len(idx)
            loss = float(-np.mean(y[idx] * np.log(p + 1e-12) + (1 - y[idx]) * np.log(1 - p + 1e-12)))
            mltrail.log_metric("train/loss", loss, step=step)  # returns at once; written in the background
            step += 1
        acc = float(np.mean(((X @ w) > 0) == y))
        mltrail.log_metrics({"train/accuracy": acc, "epoch": epoch}, step=step)
    return acc


def main() -> None:
    X, y = make_data()
    mltrail.set_experiment("demo")
    with mltrail.start_run(run_name="lr-sweep", description="numpy logistic regression") as parent:
        mltrail.log_input(mltrail.data.from_numpy(X, y, name="synthetic-2000x10"), context="training")
        results = {}
        for lr in (0.01, 0.1, 1.0):
            with mltrail.start_run(run_name=f"lr={lr}", nested=True) as child:
                mltrail.log_params({"lr": lr, "epochs": 5, "batch_size": 100, "model": "logistic"})
                results[child.info.run_id] = train(X, y, lr, epochs=5)
        best_id = max(results, key=results.__getitem__)
        mltrail.log_metric("best_accuracy", results[best_id])
        mltrail.set_tag("best_run", best_id)
        mltrail.log_dict({"accuracy_by_run": results}, "summary.json")

    client = mltrail.Client()
    print(f"Recorded into {mltrail.get_tracking_uri()}\n")
    print(f"parent run {parent.info.run_id}: {mltrail.get_run(parent.info.run_id).data.metrics}")
    runs = mltrail.search_runs(
        experiment_names=["demo"],
        filter_string=f"tags.mltrail.parentRunId = '{parent.info.run_id}'",
        order_by=["metrics.`train/accuracy` DESC"],
        output_format="list",
    )
    print(f"{'run':<10} {'lr':>6} {'accuracy':>9} {'loss points':>12} {'min loss':>9}")
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "train/loss")
        print(
            f"{run.info.run_name:<10} {run.data.params['lr']:>6} "
            f"{run.data.metrics['train/accuracy']:>9.4f} {len(history):>12} {history.values.min():>9.4f}"
        )
    print(f"\nartifacts of the parent run: {[f.path for f in client.list_artifacts(parent.info.run_id)]}")
    sklearn_demo()
    print("\nNext: mltrail runs ls --experiment demo")


def sklearn_demo() -> None:
    """scikit-learn autolog, when scikit-learn is installed (pip install 'mltrail[sklearn]')."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("\n(scikit-learn is not installed: pip install 'mltrail[sklearn]' to see autolog)")
        return
    mltrail.autolog()  # before importing scikit-learn's functions
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import GridSearchCV, train_test_split

    mltrail.set_experiment("demo-sklearn")
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    accuracy_score(y_test, model.predict(X_test))  # logged as accuracy_score_X_test
    fit_run = mltrail.last_active_run()
    GridSearchCV(LogisticRegression(max_iter=1000), {"C": [0.01, 0.1, 1.0]}, cv=3).fit(X_train, y_train)
    mltrail.autolog(disable=True)
    mltrail.sklearn.flush()
    run = mltrail.get_run(fit_run.info.run_id)
    print(
        f"\nsklearn run {run.info.run_id}: C={run.data.params['C']}, "
        f"training_accuracy_score={run.data.metrics['training_accuracy_score']:.3f}, "
        f"accuracy_score_X_test={run.data.metrics['accuracy_score_X_test']:.3f}"
    )
    print(f"artifacts: {[f.path for f in mltrail.Client().list_artifacts(run.info.run_id)]}")
    print(f"reloaded: {mltrail.sklearn.load_model(run.info.run_id)!r}")


if __name__ == "__main__":
    main()
