"""A tracking script written for MLflow's fluent API; run unchanged with ``import mltrail as mlflow``."""

import json
import os
import sys
import tempfile

import mltrail as mlflow
from mltrail import MlflowClient

mlflow.set_experiment("mlflow-compat")

with mlflow.start_run(run_name="parent") as parent_run:
    mlflow.log_params({"model": "mlp", "lr": 0.01})
    mlflow.set_tags({"team": "ml", "stage": "dev"})
    for fold in range(2):
        with mlflow.start_run(run_name=f"fold-{fold}", nested=True):
            mlflow.log_param("fold", fold)
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (fold + step + 1), step=step)
            mlflow.log_metrics({"acc": 0.5 + fold / 10, "f1": 0.4}, step=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "summary.txt")
        with open(path, "w") as fh:
            fh.write("done\n")
        mlflow.log_artifact(path)
        mlflow.log_artifact(path, artifact_path="reports")
    mlflow.log_dict({"layers": [64, 32]}, "config.json")
    mlflow.log_text("notes", "notes/readme.txt")
    mlflow.log_metric("best_acc", 0.6)

run = mlflow.get_run(parent_run.info.run_id)
client = MlflowClient()
children = mlflow.search_runs(
    experiment_names=["mlflow-compat"],
    filter_string=f"tags.mltrail.parentRunId = '{parent_run.info.run_id}'",
    output_format="list",
)
record = {
    "status": run.info.status,
    "params": dict(run.data.params),
    "metrics": dict(run.data.metrics),
    "team": run.data.tags["team"],
    "artifacts": sorted(f.path for f in client.list_artifacts(run.info.run_id) if f.path != "environment"),
    "reports": [f.path for f in client.list_artifacts(run.info.run_id, "reports")],
    "children": sorted(
        (c.data.params["fold"], c.data.metrics["loss"], c.data.metrics["acc"]) for c in children
    ),
    "history": [m.value for m in client.get_metric_history(children[0].info.run_id, "loss")],
    "experiment": mlflow.get_experiment(run.info.experiment_id).name,
}
json.dump(record, sys.stdout)
