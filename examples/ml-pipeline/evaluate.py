"""evaluate: RMSE and R² on the validation set; the run's result."""
import pickle

import numpy as np
import pandas as pd
from sklearn.metrics import mean_squared_error, r2_score

from common import log, result, workspace
from train import FEATURES


def main():
    valid = pd.read_csv(workspace("valid.csv"))
    with open(workspace("model.pkl"), "rb") as f:
        model = pickle.load(f)
    predicted = model.predict(valid[FEATURES])
    rmse = float(np.sqrt(mean_squared_error(valid["price"], predicted)))
    r2 = float(r2_score(valid["price"], predicted))
    log(f"validation RMSE {rmse:,.0f}, R² {r2:.3f}")
    result({"rmse": round(rmse, 2), "r2": round(r2, 4), "validation_rows": len(valid)})


if __name__ == "__main__":
    main()
