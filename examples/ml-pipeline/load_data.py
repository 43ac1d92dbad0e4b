"""load_data: reads the houses table from PostgreSQL; output raw.csv.

The database may be briefly unreachable: the deployment gives this task
3 retries, 5 seconds apart, and a failure here says why.
"""
import os

import pandas as pd
import psycopg2

from common import fail, log, output_path, parameters, result


def main():
    table = parameters().get("table", "houses")
    if not str(table).isidentifier():
        fail(f"parameter table={table!r} is not a plain table name")
    url = os.environ.get("ML_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
    try:
        conn = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError as e:
        fail(f"cannot reach the data database: {str(e).strip()}")
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY id")
        df = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    conn.close()
    df.to_csv(output_path("raw.csv"), index=False)
    log(f"loaded {len(df)} rows from {table}")
    result({"rows": len(df), "columns": list(df.columns)})


if __name__ == "__main__":
    main()
