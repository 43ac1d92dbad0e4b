"""preprocess: cleaning and feature engineering of load_data's raw.csv; output features.csv."""
import numpy as np
import pandas as pd

from common import input_path, log, output_path, result


def main():
    df = pd.read_csv(input_path("load_data", "raw.csv"))
    before = len(df)
    df = df.dropna(subset=["area_m2", "price"])
    # entry errors: prices far above what the area explains
    per_m2 = df["price"] / df["area_m2"]
    df = df[per_m2 < per_m2.quantile(0.5) * 4]
    df["log_distance"] = np.log1p(df["distance_km"])
    df["area_per_room"] = df["area_m2"] / df["rooms"]
    df["is_new"] = (df["age_years"] < 5).astype(int)
    df.to_csv(output_path("features.csv"), index=False)
    log(f"cleaned {before - len(df)} of {before} rows; {len(df.columns)} columns")
    result({"rows": len(df), "dropped": before - len(df)})


if __name__ == "__main__":
    main()
