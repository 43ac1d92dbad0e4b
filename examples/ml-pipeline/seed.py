"""Creates the example's data: a table of houses with their sale prices.

The data is generated here (no download): a few thousand houses whose price
depends on area, rooms, age, distance to the centre and quality, with noise,
a few missing values and a few outliers, so that cleaning and a gradient
boosting model have something to do.

    scripts/ml-python examples/ml-pipeline/seed.py [--table houses] [--rows 5000]

(scripts/ml-python runs the interpreter that has numpy and psycopg2.)

It connects with the usual PostgreSQL variables (PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE), ML_DATABASE_URL or DATABASE_URL, and replaces the
table.
"""
import argparse
import os

import numpy as np
import psycopg2
from psycopg2.extras import execute_values


def connect():
    url = os.environ.get("ML_DATABASE_URL") or os.environ.get("DATABASE_URL")
    return psycopg2.connect(url) if url else psycopg2.connect("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="houses")
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    if not args.table.isidentifier():
        raise SystemExit(f"--table {args.table!r} is not a plain table name")

    rng = np.random.default_rng(42)
    n = args.rows
    area = rng.normal(120, 35, n).clip(25, 400)
    rooms = np.maximum(1, np.round(area / 30 + rng.normal(0, 0.8, n))).astype(int)
    age = rng.uniform(0, 100, n)
    distance = rng.gamma(2.0, 4.0, n)
    quality = rng.integers(1, 6, n)
    price = (
        2500 * area
        + 8000 * rooms
        - 900 * age
        - 6000 * distance
        + 25000 * quality
        + 0.04 * (area - 120) ** 2 * 50
        + rng.normal(0, 20000, n)
    )
    area_col = area.astype(object)
    area_col[rng.choice(n, n // 100, replace=False)] = None  # missing values to clean
    price[rng.choice(n, n // 200, replace=False)] *= 10  # entry errors to drop

    rows = [
        (i + 1, None if area_col[i] is None else float(area_col[i]), int(rooms[i]), float(age[i]),
         float(distance[i]), int(quality[i]), float(price[i]))
        for i in range(n)
    ]
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {args.table}")
        cur.execute(
            f"""CREATE TABLE {args.table} (
                id int PRIMARY KEY, area_m2 double precision, rooms int, age_years double precision,
                distance_km double precision, quality int, price double precision)"""
        )
        cur.execute(f"COMMENT ON TABLE {args.table} IS 'Example data of the Ordo ML pipeline: generated houses and their sale prices'")
        execute_values(cur, f"INSERT INTO {args.table} VALUES %s", rows, page_size=1000)
    print(f"seeded {n} houses into table {args.table}")


if __name__ == "__main__":
    main()
