"""Rows that fit the demo models' input schemas, shared by the tests."""

from __future__ import annotations

# One patient of the diabetes data set (standardised measurements), as the diabetes-* models expect.
DIABETES_ROW = {
    "age": 0.03,
    "sex": -0.04,
    "bmi": 0.06,
    "bp": 0.02,
    "s1": -0.04,
    "s2": -0.03,
    "s3": -0.04,
    "s4": 0.0,
    "s5": 0.02,
    "s6": -0.01,
}
