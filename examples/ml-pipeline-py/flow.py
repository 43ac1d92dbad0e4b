"""The house-price pipeline of Ordo's quickstart, written as a Python flow.

The same data and maths as examples/ml-pipeline (one script per task, a YAML
file), as five decorated functions. Deploy it every 5 minutes on work queue
`ml`, from the repository's root:

    export ML_DATABASE_URL=$(bin/ordo dev url)
    scripts/ml-python examples/ml-pipeline/seed.py   # once: the houses table
    bin/ordo deploy examples/ml-pipeline-py/flow.py:ml_pipeline --name house_prices --work-queue ml --interval 300
    bin/ordo run house_prices --watch

or call it here, in one Python process, as a plain function:

    PYTHONPATH=sdk/python scripts/ml-python examples/ml-pipeline-py/flow.py

Values travel between the tasks as Python objects: a DataFrame or a model is
pickled into the task's outputs (the blob store), so each task may run on
another worker; evaluate's scores are JSON, shown on the run page.
"""

import os
from typing import Tuple

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

import ordo
from ordo import flow, get_run_logger, task

FEATURES = ["area_m2", "rooms", "age_years", "distance_km", "quality", "log_distance", "area_per_room", "is_new"]

# Where the data is: ML_DATABASE_URL or DATABASE_URL, else the PG*
# variables (which `ordo dev`'s worker sets to its own PostgreSQL). A task
# gets only the worker variables it names in inherit_env, and their values
# are never stored, so a password may be in them.
DATABASE_VARIABLES = ["ML_DATABASE_URL", "DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"]


@task(retries=3, retry_delay_seconds=5, timeout_seconds=120, tags=["io"], inherit_env=DATABASE_VARIABLES)
def load_data(table: str) -> pd.DataFrame:
    """Reads the table of houses; the database may be briefly unreachable, hence the retries."""
    import psycopg2

    if not table.isidentifier():
        raise ValueError(f"parameter table={table!r} is not a plain table name")
    try:
        url = os.environ.get("ML_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
        conn = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError as e:
        # one line: the last line of the traceback is the failure's message
        raise ConnectionError("cannot reach the data database: " + " ".join(str(e).split())) from None
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY id")
        df = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    conn.close()
    get_run_logger().info("loaded %d rows from %s", len(df), table)
    return df


@task
def preprocess(raw: pd.DataFrame) -> pd.DataFrame:
    """Cleaning and feature engineering."""
    df = raw.dropna(subset=["area_m2", "price"])
    # entry errors: prices far above what the area explains
    per_m2 = df["price"] / df["area_m2"]
    df = df[per_m2 < per_m2.quantile(0.5) * 4].copy()
    df["log_distance"] = np.log1p(df["distance_km"])
    df["area_per_room"] = df["area_m2"] / df["rooms"]
    df["is_new"] = (df["age_years"] < 5).astype(int)
    print(f"cleaned {len(raw) - len(df)} of {len(raw)} rows; {len(df.columns)} columns")
    return df


@task
def split(features: pd.DataFrame, test_size: float) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation sets."""
    train_set, test_set = train_test_split(features, test_size=test_size, random_state=7)
    print(f"train {len(train_set)} rows, test {len(test_set)} rows (test_size={test_size})")
    return train_set, test_set


@task(timeout_seconds=600, tags=["training"])
def train(train_set: pd.DataFrame, n_estimators: int, learning_rate: float, max_depth: int) -> GradientBoostingRegressor:
    """A gradient boosting regressor of the price."""
    model = GradientBoostingRegressor(
        n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth, random_state=0
    )
    model.fit(train_set[FEATURES], train_set["price"])
    print(f"trained {model.n_estimators} trees on {len(train_set)} rows")
    return model


@task
def evaluate(model: GradientBoostingRegressor, test_set: pd.DataFrame) -> ordo.Metrics:
    """R², RMSE and MAE on the validation set, as the task's metrics; report.md for people."""
    predicted = model.predict(test_set[FEATURES])
    actual = test_set["price"].to_numpy()
    scores = ordo.Metrics(
        rmse=float(np.sqrt(mean_squared_error(actual, predicted))),
        r2=float(r2_score(actual, predicted)),
        mae=float(mean_absolute_error(actual, predicted)),
    )
    print(f"test RMSE {scores['rmse']:,.0f}, MAE {scores['mae']:,.0f}, R² {scores['r2']:.3f}")
    (ordo.output_dir() / "report.md").write_text(
        "# House price model: evaluation\n\n"
        f"Gradient boosting regressor, evaluated on {len(test_set)} held-out houses.\n\n"
        "| metric | value |\n| --- | ---: |\n"
        f"| R² | {scores['r2']:.4f} |\n| RMSE | {scores['rmse']:,.0f} |\n| MAE | {scores['mae']:,.0f} |\n"
    )
    return scores


@flow(name="ml-pipeline")
def ml_pipeline(
    table: str = "houses",
    test_size: float = 0.2,
    n_estimators: int = 200,
    learning_rate: float = 0.05,
    max_depth: int = 3,
):
    """Train and validate the house-price model."""
    raw = load_data(table)
    features = preprocess(raw)
    train_set, test_set = split(features, test_size)
    model = train(train_set, n_estimators, learning_rate, max_depth)
    return evaluate(model, test_set)


if __name__ == "__main__":
    print(ml_pipeline())
