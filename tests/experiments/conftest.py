"""Experiments tests run torch on one thread: these models are tiny, and on a shared 2-core machine
two OpenMP threads can make small ops 100x slower. The previous setting is restored afterwards."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
