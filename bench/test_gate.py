#!/usr/bin/env python3
"""Table test of the regression gate's decision (bench/gate.py judge); run by bench/check.sh."""

import math
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gate import judge  # noqa: E402

BASE = {"start_p50_ratio": 0.08, "per_pod_memory_ratio": 0.5}


class Judge(unittest.TestCase):
    def test_table(self):
        cases = [
            # (name, measured, expected ok per key in GATED order)
            ("same figures pass", {"start_p50_ratio": 0.08, "per_pod_memory_ratio": 0.5}, [True, True]),
            ("better passes", {"start_p50_ratio": 0.02, "per_pod_memory_ratio": 0.1}, [True, True]),
            ("24 % worse passes", {"start_p50_ratio": 0.0992, "per_pod_memory_ratio": 0.62}, [True, True]),
            ("exactly 25 % worse passes", {"start_p50_ratio": 0.1, "per_pod_memory_ratio": 0.625}, [True, True]),
            ("start 26 % worse fails", {"start_p50_ratio": 0.1008, "per_pod_memory_ratio": 0.5}, [False, True]),
            ("memory 30 % worse fails", {"start_p50_ratio": 0.08, "per_pod_memory_ratio": 0.65}, [True, False]),
            ("both worse fail", {"start_p50_ratio": 0.2, "per_pod_memory_ratio": 1.0}, [False, False]),
            ("missing ratio fails", {"per_pod_memory_ratio": 0.5}, [False, True]),
            ("NaN fails", {"start_p50_ratio": math.nan, "per_pod_memory_ratio": 0.5}, [False, True]),
            ("infinity fails", {"start_p50_ratio": 0.08, "per_pod_memory_ratio": math.inf}, [True, False]),
            ("zero fails (nothing measured)", {"start_p50_ratio": 0.0, "per_pod_memory_ratio": 0.5}, [False, True]),
            ("a string fails", {"start_p50_ratio": "0.08", "per_pod_memory_ratio": 0.5}, [False, True]),
        ]
        for name, measured, want in cases:
            with self.subTest(name):
                got = [ok for _, _, _, _, ok in judge(BASE, measured)]
                self.assertEqual(got, want)

    def test_limit_is_recorded_plus_tolerance(self):
        verdicts = judge(BASE, BASE)
        self.assertEqual([k for k, *_ in verdicts], ["start_p50_ratio", "per_pod_memory_ratio"])
        self.assertAlmostEqual(verdicts[0][3], 0.1)
        self.assertAlmostEqual(verdicts[1][3], 0.625)

    def test_unrecorded_ratio_is_not_gated(self):
        verdicts = judge({"start_p50_ratio": 0.08}, {"start_p50_ratio": 0.09})
        self.assertEqual([(k, ok) for k, _, _, _, ok in verdicts], [("start_p50_ratio", True)])

    def test_other_tolerance(self):
        verdicts = judge(BASE, {"start_p50_ratio": 0.09, "per_pod_memory_ratio": 0.5}, tolerance=0.1)
        self.assertEqual([ok for *_, ok in verdicts], [False, True])


if __name__ == "__main__":
    unittest.main()
