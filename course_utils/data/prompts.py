"""The chat messages a model sees, the training features (prompt masked, EOS appended), and their batches."""

from __future__ import annotations

from typing import Sequence

import torch

from .splits import TASKS
from .json_task import JSON_INSTRUCTION


SQL_INSTRUCTION = "Write one SQLite query that answers the question. Tables:"


def build_messages(example: dict, with_answer: bool = False) -> list[dict[str, str]]:
    """Chat messages for one example: instructions (and schema) as system, question as user."""
    if example["task"] == "sql":
        system = f"{SQL_INSTRUCTION}\n{example['schema']}"
    elif example["task"] == "json":
        system = JSON_INSTRUCTION
    else:
        raise ValueError(f"Unknown task {example['task']!r}; choose one of {TASKS}.")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": example["question"]}]
    if with_answer:
        messages.append({"role": "assistant", "content": example["answer"]})
    return messages


def prompt_text(tokenizer, example: dict) -> str:
    """The chat-formatted prompt, ending where the assistant's answer starts."""
    return tokenizer.apply_chat_template(build_messages(example), tokenize=False, add_generation_prompt=True)


def training_features(tokenizer, example: dict, max_length: int = 256) -> dict[str, list[int]]:
    """Token ids and labels for one example: loss only on the answer and its EOS.

    The prompt tokens get label -100 (ignored by the loss), so the model learns
    to write the answer, not to repeat the question. The EOS token teaches it
    to stop. Too-long examples are an error, never silently truncated.
    """
    prompt_ids = tokenizer(prompt_text(tokenizer, example), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = prompt_ids + answer_ids
    if len(input_ids) > max_length:
        raise ValueError(f"Example {example.get('id')} has {len(input_ids)} tokens, more than max_length="
                         f"{max_length}; raise max_length.")
    return {"input_ids": input_ids, "labels": [-100] * len(prompt_ids) + answer_ids}


def collate(features: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of training features into tensors."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), -100, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def trim_to_answers(batch: dict[str, torch.Tensor]) -> dict:
    """The same batch, asking a causal LM for logits only where a label needs them.

    With the prompt masked, only the positions that predict answer tokens need
    the LM head, and the head is a fifth of the tiny model's work per token
    (49,152 outputs per position; a training example is 133 tokens, 23 of them
    the answer). transformers' causal LMs take `logits_to_keep=K` (logits for
    the last K positions); K here reaches back to the position before the
    batch's first labelled token. The labels are cut to the same K columns: the
    model's loss shifts labels by one, so each kept logit still meets the next
    token's label. Every dropped column holds only -100, so the loss, its
    gradients and the Trainer's count of answer tokens are those of the whole
    batch, up to float rounding. A batch with a label on every token (lesson
    05's unmasked prompt) keeps every position. (Not for context-parallel
    training, which splits labels and inputs along the sequence: the course
    trains on one device.)
    """
    labels = batch["labels"]
    length = labels.shape[1]
    labelled = (labels != -100).any(dim=0).nonzero()
    keep = length - max(1, int(labelled[0])) + 1 if len(labelled) else 1
    return {**batch, "labels": labels[:, length - keep:], "logits_to_keep": keep}
