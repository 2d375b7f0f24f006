"""Properties that must hold for every input, searched by hypothesis rather than listed by hand.

- The scorers never raise on what a model writes, stay within their time limit
  and score in [0, 1]; a correct answer in any wrapper a model uses scores 1.
- The shard-by-shard merge equals PEFT's `merge_and_unload` for any LoRA
  setting the merge supports (rank, alpha, rsLoRA, targets).

The example counts are small (the sandbox and the merge cost milliseconds to a
second an example); `derandomize=True` makes each CI run try the same examples,
so a failure reproduces, and a new input shape is added here when one is found.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from course_utils.data import evenly_spaced, load_examples
from course_utils.evaluate import extract_sql, score_json, score_sql
from course_utils.sql_sandbox import SQL_TIME_LIMIT_S

QUICK = settings(max_examples=150, deadline=None, derandomize=True)
SANDBOXED = settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])

GOLD_SQL = evenly_spaced(load_examples("sql", "validation"), 12)
GOLD_JSON = evenly_spaced(load_examples("json", "validation"), 12)

# Text a model might write: any unicode, and text built from the pieces that trip parsers up.
PIECES = ["```", "```sql", "~~~", "````", "`", "\n", "\r\n", " ", "SELECT", "WITH", "FROM", "WHERE", ";", "'", '"',
          "{", "}", "[", "]", ":", ",", "--", "/*", "*/", "1e999", "9" * 40, "NaN", "null", "\\", "\x00", "é"]
MODEL_TEXT = st.one_of(st.text(max_size=400), st.lists(st.sampled_from(PIECES), max_size=60).map("".join))
PROSE_WORDS = ["Here", "is", "the", "query", "you", "asked", "for", "It", "returns", "rows", "Sure", "answer", "this",
               "gives", "result", ":", ".", ","]
PROSE = st.lists(st.sampled_from(PROSE_WORDS), min_size=1, max_size=12).map(" ".join)


@QUICK
@given(text=MODEL_TEXT)
def test_extract_sql_never_raises_and_returns_part_of_the_text(text):
    query = extract_sql(text)
    assert isinstance(query, str)
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    assert query in normalised  # a slice of what the model wrote, never something invented


@SANDBOXED
@given(text=MODEL_TEXT, example=st.sampled_from(GOLD_SQL))
def test_score_sql_never_raises_and_is_scored_within_the_limit(text, example):
    start = time.perf_counter()
    correct, reason = score_sql(text, example["answer"], example["db_id"])
    assert isinstance(correct, bool) and isinstance(reason, str) and reason
    assert time.perf_counter() - start < SQL_TIME_LIMIT_S + 5  # the limit, plus a worker restart at worst


@QUICK
@given(text=MODEL_TEXT, example=st.sampled_from(GOLD_JSON))
def test_score_json_never_raises_and_scores_a_fraction(text, example):
    score, reason = score_json(text, example["answer"])
    assert 0.0 <= score <= 1.0 and isinstance(reason, str)


def _wrapped(query: str, wrapper: str, before: str, after: str) -> str:
    return {
        "plain": query,
        "plain, then prose": f"{query}\n\n{after}",
        "```sql fence": f"{before}\n```sql\n{query}\n```\n{after}",
        "``` fence": f"{before}\n```\n{query}\n```",
        "SQL fence": f"```SQL\n{query}\n```",
        "~~~ fence": f"{before}\n~~~sql\n{query}\n~~~\n{after}",
        "four backticks": f"````sql\n{query}\n````",
        "one-line fence": f"```sql {query}```",
        "CRLF fence": f"{before}\r\n```sql\r\n{query}\r\n```\r\n",
        "unclosed fence": f"{before}\n```sql\n{query}",
        "query, then a lone fence": f"{query}\n```\n{after}",
        "inline code": f"{before} `{query}` {after}",
    }[wrapper]


WRAPPERS = ["plain", "plain, then prose", "```sql fence", "``` fence", "SQL fence", "~~~ fence", "four backticks",
            "one-line fence", "CRLF fence", "unclosed fence", "query, then a lone fence", "inline code"]


@pytest.mark.parametrize("wrapper", WRAPPERS)
@settings(max_examples=12, deadline=None, derandomize=True)
@given(example=st.sampled_from(GOLD_SQL), before=PROSE, after=PROSE)
def test_a_correct_query_scores_one_in_every_wrapper(wrapper, example, before, after):
    query = " ".join(example["answer"].split()) if wrapper == "inline code" else example["answer"]
    correct, reason = score_sql(_wrapped(query, wrapper, before, after), example["answer"], example["db_id"])
    assert correct, (wrapper, reason)


@QUICK
@given(example=st.sampled_from(GOLD_JSON), before=PROSE, after=PROSE, fenced=st.booleans())
def test_a_correct_json_answer_scores_one_with_prose_around_it(example, before, after, fenced):
    body = json.dumps(json.loads(example["answer"]))
    text = f"{before}\n```json\n{body}\n```\n{after}" if fenced else f"{before} {body} {after}"
    assert score_json(text, example["answer"])[0] == 1.0


# --------------------------------------------------------------------------- the merge


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(r=st.integers(1, 6), alpha=st.sampled_from([1, 2, 4, 8, 16, 3.5]), rslora=st.booleans(),
       targets=st.lists(st.sampled_from(TARGETS), min_size=1, max_size=7, unique=True),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_any_supported_lora_setting_merges_as_peft_does(tmp_path_factory, r, alpha, rslora, targets, dtype, seed):
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from course_utils.merge import base_shards, merge_adapter_shardwise
    from mini_model import mini_model_dir

    folder = tmp_path_factory.mktemp("merge")
    load = lambda: AutoModelForCausalLM.from_pretrained(mini_model_dir(), dtype=dtype)
    load().save_pretrained(folder / "base", max_shard_size="100KB")
    torch.manual_seed(seed)
    model = get_peft_model(load(), LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules=targets,
                                              task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    model.save_pretrained(folder / "adapter")
    merge_adapter_shardwise(folder / "base", folder / "adapter", folder / "merged", progress=False)
    expected = PeftModel.from_pretrained(load(), folder / "adapter").merge_and_unload().state_dict()
    merged = {k: v for shard in base_shards(folder / "merged") for k, v in load_file(folder / "merged" / shard).items()}
    # Both add scaling * B @ A to W in the weight's dtype; in fp32 the two agree to the bit, in bf16 to one rounding
    # step of the result (PEFT and the merge may round the product at different points).
    step = 0.0 if dtype == torch.float32 else torch.finfo(dtype).eps
    assert merged and set(expected) - set(merged) <= {"lm_head.weight"}  # tied to the embeddings: not saved
    for key, tensor in merged.items():
        assert tensor.dtype == expected[key].dtype, key
        tolerance = step * expected[key].abs().float().clamp(min=1e-3)
        assert ((tensor.float() - expected[key].float()).abs() <= tolerance).all(), key
