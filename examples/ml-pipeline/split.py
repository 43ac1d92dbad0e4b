"""split: train and test sets of preprocess's features; outputs train.csv and test.csv."""
import pandas as pd
from sklearn.model_selection import train_test_split

from common import input_path, log, output_path, parameters, result


def main():
    test_size = float(parameters().get("test_size", 0.2))
    df = pd.read_csv(input_path("preprocess", "features.csv"))
    train, test = train_test_split(df, test_size=test_size, random_state=7)
    train.to_csv(output_path("train.csv"), index=False)
    test.to_csv(output_path("test.csv"), index=False)
    log(f"train {len(train)} rows, test {len(test)} rows (test_size={test_size})")
    result({"train_rows": len(train), "test_rows": len(test)})


if __name__ == "__main__":
    main()
