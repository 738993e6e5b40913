"""GGUF end to end at the file size of llama.cpp's Q3_K_M mix (tests/gguf_runs.py says what is
compared; test_gguf_e2e.py does Q4_K_M). Runs where llama-cpp-python is installed
(`.ci/env/llamacpp.sh`)."""

from __future__ import annotations

from tests.gguf_runs import check_beats_llama_cpp, dense_file, search_at, small_model  # first: skips without llama.cpp

import pytest

pytestmark = pytest.mark.slow


def test_searched_mix_beats_llama_cpp_at_its_file_size(tmp_path):
    small = small_model()
    dense = dense_file(small, tmp_path)
    result, mix_file = search_at("Q3_K_M", small, dense[0], tmp_path)
    check_beats_llama_cpp("Q3_K_M", result, mix_file, dense)
