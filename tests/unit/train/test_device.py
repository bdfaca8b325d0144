"""Device choice and the CPU thread budget."""

from __future__ import annotations

import pytest
import torch

from swarmd.errors import ConfigError
from swarmd.train import choose_device, configure_threads, thread_count
from swarmd.train.device import cpu_count


def test_auto_picks_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto").type == expected
    assert choose_device("CPU") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        choose_device("cuda:0")


def test_unknown_device_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        choose_device("tpu")


def test_thread_budget():
    assert thread_count(0) == max(1, min(4, cpu_count() - 1))
    assert thread_count(3) == 3
    with pytest.raises(ConfigError):
        thread_count(-1)
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
