"""How values travel: JSON results, pickled and large values as outputs, descriptors, Metrics."""

import io
import json
import math
import unittest

import support  # noqa: F401

from ordo import Metrics, _values


class Point:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Point) and other.x == self.x


class EncodeTest(unittest.TestCase):
    def test_json_values_stay_json(self):
        for v in (None, True, 1, 1.5, "é", [1, [2]], {"a": {"b": [None]}}, []):
            text, output, data = _values.encode(v)
            self.assertIsNone(output)
            self.assertIsNone(data)
            self.assertEqual(json.loads(text), v)
        self.assertEqual(_values.encode({"a": 1})[0], '{"a":1}')  # compact

    def test_other_values_are_pickled(self):
        for v in ((1, 2), {1: "a"}, {"a": (1,)}, float("nan"), [float("inf")], Point(3), {1, 2}, b"x"):
            with self.subTest(v=v):
                text, output, data = _values.encode(v)
                self.assertEqual(output, "_return.pkl")
                desc = json.loads(text)["__ordo_value__"]
                self.assertEqual(desc["output"], "_return.pkl")
                self.assertEqual(desc["format"], "pickle")
                back = _values.decode(json.loads(text), lambda name: io.BytesIO(data))
                if isinstance(v, float) and math.isnan(v):
                    self.assertTrue(math.isnan(back))
                elif isinstance(v, list):
                    self.assertEqual(back, v)
                else:
                    self.assertEqual(back, v)
                    self.assertIs(type(back), type(v))

    def test_descriptor_names_type_and_repr(self):
        text, _, _ = _values.encode(Point(1))
        desc = json.loads(text)["__ordo_value__"]
        self.assertEqual(desc["type"], "test_values.Point")
        self.assertIn("Point object", desc["repr"])
        text, _, _ = _values.encode(("x" * 1000,))
        desc = json.loads(text)["__ordo_value__"]
        self.assertEqual(desc["type"], "tuple")
        self.assertLessEqual(len(desc["repr"]), 200)

    def test_large_json_is_an_output(self):
        v = ["x" * 1000] * 1100  # over 1 MiB compact
        text, output, data = _values.encode(v)
        self.assertEqual(output, "_return.json")
        desc = json.loads(text)["__ordo_value__"]
        self.assertEqual(desc["format"], "json")
        self.assertEqual(desc["type"], "list")
        self.assertEqual(json.loads(data), v)
        self.assertEqual(_values.decode(json.loads(text), lambda name: io.BytesIO(data)), v)
        small = ["x" * 1000] * 1000
        self.assertIsNone(_values.encode(small)[1])

    def test_json_that_looks_like_a_descriptor_is_pickled(self):
        v = {"__ordo_value__": {"output": "x"}}
        text, output, data = _values.encode(v)
        self.assertEqual(output, "_return.pkl")
        self.assertEqual(_values.roundtrip(v), v)

    def test_unpicklable_value(self):
        with self.assertRaises(_values.ValueTravelError) as cm:
            _values.encode(lambda: 1)
        self.assertIn("cannot be pickled", str(cm.exception))

    def test_roundtrip(self):
        self.assertEqual(_values.roundtrip((1, [2])), (1, [2]))
        self.assertEqual(_values.roundtrip({"a": 1}), {"a": 1})
        m = _values.roundtrip(Metrics(a=1))
        self.assertEqual(m, {"a": 1})
        self.assertIs(type(m), dict)

    def test_unknown_format(self):
        with self.assertRaises(ValueError):
            _values.decode({"__ordo_value__": {"output": "x", "format": "xml"}}, lambda n: io.BytesIO())


class MetricsTest(unittest.TestCase):
    def test_metrics_is_a_json_dict(self):
        m = Metrics(r2=0.96, rmse=12, n=3)
        self.assertIsInstance(m, dict)
        self.assertEqual(m, {"r2": 0.96, "rmse": 12, "n": 3})
        self.assertIsNone(_values.encode(m)[1])

    def test_bad_metrics(self):
        for kwargs, exc in (({"a": "1"}, TypeError), ({"a": True}, TypeError), ({"a": float("nan")}, ValueError),
                            ({"a": float("inf")}, ValueError), ({"a": None}, TypeError)):
            with self.subTest(kwargs=kwargs):
                with self.assertRaises(exc) as cm:
                    Metrics(**kwargs)
                self.assertIn("'a'", str(cm.exception))
        with self.assertRaises(TypeError):
            Metrics({1: 2})


if __name__ == "__main__":
    unittest.main()
