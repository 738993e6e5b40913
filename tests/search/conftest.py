import pytest

from evopress.search import Budget

from tests.search.synthetic import binary_space


@pytest.fixture
def space():
    return binary_space()


@pytest.fixture
def budget():
    return Budget.of(attn=2, mlp=2)
