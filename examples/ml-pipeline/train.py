"""train: a gradient boosting regressor of the price, on split's train.csv; output model.pkl."""
import pickle

import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor

from common import input_path, log, output_path, parameters, result

FEATURES = ["area_m2", "rooms", "age_years", "distance_km", "quality", "log_distance", "area_per_room", "is_new"]


def main():
    p = parameters()
    train = pd.read_csv(input_path("split", "train.csv"))
    model = GradientBoostingRegressor(
        n_estimators=int(p.get("n_estimators", 200)),
        learning_rate=float(p.get("learning_rate", 0.05)),
        max_depth=int(p.get("max_depth", 3)),
        random_state=0,
    )
    model.fit(train[FEATURES], train["price"])
    with open(output_path("model.pkl"), "wb") as f:
        pickle.dump(model, f)
    log(f"trained {model.n_estimators} trees on {len(train)} rows")
    result({"n_estimators": model.n_estimators, "train_rows": len(train)})


if __name__ == "__main__":
    main()
