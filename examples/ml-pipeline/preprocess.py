"""preprocess: cleaning and feature engineering."""
import numpy as np
import pandas as pd

from common import log, result, workspace


def main():
    df = pd.read_csv(workspace("raw.csv"))
    before = len(df)
    df = df.dropna(subset=["area_m2", "price"])
    # entry errors: prices far above what the area explains
    per_m2 = df["price"] / df["area_m2"]
    df = df[per_m2 < per_m2.quantile(0.5) * 4]
    df["log_distance"] = np.log1p(df["distance_km"])
    df["area_per_room"] = df["area_m2"] / df["rooms"]
    df["is_new"] = (df["age_years"] < 5).astype(int)
    df.to_csv(workspace("features.csv"), index=False)
    log(f"cleaned {before - len(df)} of {before} rows; {len(df.columns)} columns")
    result({"rows": len(df), "dropped": before - len(df), "path": "features.csv"})


if __name__ == "__main__":
    main()
