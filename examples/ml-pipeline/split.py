"""split: train and validation sets."""
import pandas as pd
from sklearn.model_selection import train_test_split

from common import log, parameters, result, workspace


def main():
    test_size = float(parameters().get("test_size", 0.2))
    df = pd.read_csv(workspace("features.csv"))
    train, valid = train_test_split(df, test_size=test_size, random_state=7)
    train.to_csv(workspace("train.csv"), index=False)
    valid.to_csv(workspace("valid.csv"), index=False)
    log(f"train {len(train)} rows, validation {len(valid)} rows (test_size={test_size})")
    result({"train_rows": len(train), "valid_rows": len(valid)})


if __name__ == "__main__":
    main()
