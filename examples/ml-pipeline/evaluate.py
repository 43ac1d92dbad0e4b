"""evaluate: train's model on split's test set.

Metrics R², RMSE and MAE (ORDO_METRICS_PATH), and two outputs for people:
report.md (the scores and the parameters) and residuals.png (residuals
against predicted prices; skipped, with a log line, where matplotlib is not
installed). The result repeats the scores: it is the run's result.
"""
import pickle

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from common import input_path, log, metrics, output_path, parameters, result
from train import FEATURES


def report(scores, params, rows):
    lines = [
        "# House price model: evaluation",
        "",
        f"Gradient boosting regressor, evaluated on {rows} held-out houses.",
        "",
        "| metric | value |",
        "| --- | ---: |",
        f"| R² | {scores['r2']:.4f} |",
        f"| RMSE | {scores['rmse']:,.0f} |",
        f"| MAE | {scores['mae']:,.0f} |",
        "",
        "## Parameters",
        "",
        "| name | value |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {value} |" for name, value in sorted(params.items())]
    with open(output_path("report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def residuals_plot(predicted, actual):
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed: no residuals.png (install python3-matplotlib)")
        return False
    matplotlib.use("Agg")  # no display on a worker
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.scatter(predicted, actual - predicted, s=8, alpha=0.5)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xlabel("predicted price")
    ax.set_ylabel("residual (actual - predicted)")
    ax.set_title("Residuals on the test set")
    fig.tight_layout()
    fig.savefig(output_path("residuals.png"), format="png")
    plt.close(fig)
    return True


def main():
    test = pd.read_csv(input_path("split", "test.csv"))
    with open(input_path("train", "model.pkl"), "rb") as f:
        model = pickle.load(f)
    predicted = model.predict(test[FEATURES])
    actual = test["price"].to_numpy()
    scores = {
        "r2": float(r2_score(actual, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(actual, predicted))),
        "mae": float(mean_absolute_error(actual, predicted)),
    }
    log(f"test RMSE {scores['rmse']:,.0f}, MAE {scores['mae']:,.0f}, R² {scores['r2']:.3f}")
    metrics(scores)
    report(scores, parameters(), len(test))
    plotted = residuals_plot(predicted, actual)
    result({"rmse": round(scores["rmse"], 2), "mae": round(scores["mae"], 2), "r2": round(scores["r2"], 4),
            "test_rows": len(test), "plot": plotted})


if __name__ == "__main__":
    main()
