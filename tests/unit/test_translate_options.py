"""Ollama ``options`` -> OpenAI/vLLM sampling parameters (spec §2.2)."""

from __future__ import annotations

from typing import Any

import pytest

from vllama.errors import BadRequest
from vllama.translate.options import map_options


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"num_predict": 128}, {"max_tokens": 128}),
        ({"num_predict": 128.0}, {"max_tokens": 128}),
        ({"num_predict": -1}, {}),
        ({"num_predict": -2}, {}),
        ({"num_predict": 0}, {}),
        ({"temperature": 0.2}, {"temperature": 0.2}),
        ({"temperature": 0}, {"temperature": 0.0}),
        ({"top_p": 0.9, "top_k": 40, "min_p": 0.05}, {"top_p": 0.9, "top_k": 40, "min_p": 0.05}),
        ({"top_k": 40.0}, {"top_k": 40}),
        ({"top_k": 7.9}, {"top_k": 7}),  # Go: int64(float64) truncates
        ({"repeat_penalty": 1.1}, {"repetition_penalty": 1.1}),
        ({"presence_penalty": 0.5}, {"presence_penalty": 0.5}),
        ({"frequency_penalty": 1}, {"frequency_penalty": 1.0}),
        ({"seed": 42}, {"seed": 42}),
        ({"seed": 0}, {"seed": 0}),
        ({"seed": -1}, {}),
        ({"stop": ["\n", "User:"]}, {"stop": ["\n", "User:"]}),
        ({"stop": "###"}, {"stop": ["###"]}),
        ({"stop": []}, {"stop": []}),
        ({"temperature": None, "seed": None}, {}),
        # runner-only, legacy and unknown keys: accepted, ignored
        ({"num_ctx": 8192, "num_batch": 512, "num_gpu": 99, "main_gpu": 0}, {}),
        ({"num_thread": 8, "use_mmap": False, "num_keep": 4, "typical_p": 1.0}, {}),
        ({"repeat_last_n": 64}, {}),
        ({"mirostat": 2, "mirostat_tau": 5.0, "mirostat_eta": 0.1, "tfs_z": 1.0}, {}),
        ({"penalize_newline": True, "numa": False, "low_vram": False, "use_mlock": True}, {}),
        ({"vocab_only": False, "logits_all": False, "embedding_only": False}, {}),
        ({"mirostat": "anything", "tfs_z": [1]}, {}),  # legacy keys are not type-checked
        ({"no_such_option": {"x": 1}}, {}),
        (
            {"num_predict": 64, "temperature": 0.0, "seed": 7, "stop": ["</s>"], "num_ctx": 4096},
            {"max_tokens": 64, "temperature": 0.0, "seed": 7, "stop": ["</s>"]},
        ),
    ],
)
def test_map_options(options: object, expected: dict[str, Any]) -> None:
    assert map_options(options) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_predict": "10"}, 'option "num_predict" must be of type integer'),
        ({"num_predict": True}, 'option "num_predict" must be of type integer'),
        ({"seed": [1]}, 'option "seed" must be of type integer'),
        ({"top_k": False}, 'option "top_k" must be of type integer'),
        ({"temperature": "0.7"}, 'option "temperature" must be of type float32'),
        ({"temperature": True}, 'option "temperature" must be of type float32'),
        ({"top_p": {}}, 'option "top_p" must be of type float32'),
        ({"repeat_penalty": "1.1"}, 'option "repeat_penalty" must be of type float32'),
        ({"stop": 5}, 'option "stop" must be of type array'),
        ({"stop": {"a": 1}}, 'option "stop" must be of type array'),
        ({"stop": ["ok", 3]}, 'option "stop" must be of an array of strings'),
        ({"num_ctx": "8k"}, 'option "num_ctx" must be of type integer'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
        ({"typical_p": "1"}, 'option "typical_p" must be of type float32'),
    ],
)
def test_wrong_type_for_known_key_is_400_with_ollamas_message(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest) as info:
        map_options(options)
    assert info.value.message == message
    assert info.value.status == 400


@pytest.mark.parametrize("options", [[], "temperature=1", 3, True])
def test_options_must_be_an_object(options: object) -> None:
    with pytest.raises(BadRequest, match="options must be an object"):
        map_options(options)


def test_int_results_are_ints_not_floats() -> None:
    out = map_options({"num_predict": 10.0, "seed": 3.0, "top_k": 5.0})
    assert all(type(v) is int for v in out.values())
