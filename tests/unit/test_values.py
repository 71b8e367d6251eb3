import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from winnow.values import is_finite_number


@pytest.mark.parametrize("value", [0, -3, 2.5, 10**300, np.float32(1.5), np.int64(7), Fraction(1, 3)])
def test_finite_real_numbers(value):
    assert is_finite_number(value)


@pytest.mark.parametrize("value", [True, False, math.nan, math.inf, -math.inf, 10**400, "1", None, [1], {"a": 1}])
def test_everything_else(value):
    assert not is_finite_number(value)


def test_samplers_still_import_no_django():
    code = "import sys, sampling.samplers; assert 'django' not in sys.modules, 'django imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
