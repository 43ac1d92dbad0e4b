"""Task helpers with Prefect 2's names: `from ordo.tasks import task_input_hash`."""


def task_input_hash(context, arguments):
    """Cache a task's result by its inputs: `@task(cache_key_fn=task_input_hash)`.

    On Ordo this function is a marker: the server computes the key before the task starts, from
    the task's definition, its arguments (parameters and constants) and its upstream results and
    outputs (`cache: {key: "inputs"}`). Called directly it returns a hash of arguments, as in
    Prefect, so code that calls it keeps working.
    """
    import hashlib
    import pickle

    from ordo import _values

    try:
        data = _values.dumps(arguments).encode("utf-8") if _values.is_json(arguments) else pickle.dumps(arguments, 4)
    except Exception:
        return None
    return hashlib.sha256(data).hexdigest()
