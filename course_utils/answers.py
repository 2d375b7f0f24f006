"""The course's yardstick and its generated answers.

`answer_loss()` is the course's main comparison metric: the cross-entropy of
the answer tokens of held-out examples, the prompt masked exactly as in
training. It needs forward passes only, so it is cheap on a CPU and sensitive
where execution accuracy on a few dozen generated answers is not.
`generate_answers()` batches greedy generation (prompts of similar length
together) and `evaluate_model()` scores the answers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from .data import collate, prompt_text, training_features, trim_to_answers
from .evaluate import EvalReport, score_task


@torch.no_grad()
def answer_token_losses(model, tokenizer, examples: Sequence[dict], batch_size: int = 8,
                        max_length: int = 256) -> tuple[list[float], list[int]]:
    """Per example: the summed cross-entropy of its answer tokens, and how many there are.

    The prompt is masked exactly as in training (`training_features`); the EOS
    counts as an answer token. Per-example values let a comparison of two
    models on the same examples estimate its own noise (`course_utils.compare`).
    """
    if not examples:
        raise ValueError("answer_loss needs at least one example.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: list[float] = [0.0] * len(examples)
    counts: list[int] = [0] * len(examples)
    features = [training_features(tokenizer, e, max_length) for e in examples]
    # Batches of similar length: a batch is padded to its longest example. On the 48-question yardstick, batches
    # of 8 in the given order are 29% padding (8,848 positions for 6,303 tokens), sorted ones 6% (6,736).
    # The values come back in the examples' order.
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = trim_to_answers({k: v.to(device) for k, v in
                                 collate([features[i] for i in rows], tokenizer.pad_token_id).items()})
        # Logits only from the position before the batch's first answer token (`trim_to_answers`): the
        # prompt's positions need none. Logit j predicts label j + 1, as in the model's own loss.
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       logits_to_keep=batch["logits_to_keep"]).logits.float()
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                   ignore_index=-100, reduction="none").view(labels.shape)
        for i, total, count in zip(rows, losses.sum(dim=1).tolist(), (labels != -100).sum(dim=1).tolist()):
            sums[i], counts[i] = total, count
    model.train(was_training)
    return sums, counts


def answer_loss(model, tokenizer, examples: Sequence[dict], batch_size: int = 8, max_length: int = 256) -> float:
    """Mean cross-entropy per answer token on `examples`: the course's main yardstick.

    The prompt is masked exactly as in training (`training_features`), and the
    mean is over answer tokens (the EOS included), not over batches, so the
    value does not depend on the batch size. Forward passes only: on a CPU it
    costs a fraction of generating and scoring the same examples, and it moves
    smoothly where execution accuracy jumps between 0 and 1 per question.
    """
    sums, counts = answer_token_losses(model, tokenizer, examples, batch_size, max_length)
    return sum(sums) / sum(counts)


def generation_batch_size(device: torch.device) -> int:
    """Examples generated at once: 32 on a CPU, 16 on a GPU.

    `generate_answers` sorts the prompts by length first, so a batch is padded
    little, and a batch stops as soon as all its answers have ended. On a CPU a
    decoding step reads every weight once for the whole batch, which favours
    large batches; early stopping favours small ones. Measured on one AVX2 core
    (64 test questions, 64 new tokens at most): the course's adapter took 85 s
    in one unsorted batch of 64, 70 s in sorted batches of 32 and 65 s of 16;
    the base model, whose answers rarely end early, 77 s in one batch and 81 s
    in sorted batches of 16. The answers were the same every time. On a GPU 16
    keeps the KV cache of a 7B model small.
    """
    return 16 if device.type == "cuda" else 32


@torch.no_grad()
def generate_answers(model, tokenizer, examples: Sequence[dict], max_new_tokens: int = 64,
                     batch_size: int | None = None, progress: bool = True) -> list[str]:
    """Greedy answers for a list of examples, in the examples' order.

    Generated in batches of prompts of similar length (left padding), so a
    batch pads little and ends when its own answers have ended.
    """
    device = next(model.parameters()).device
    batch_size = batch_size or generation_batch_size(device)
    tokenizer.padding_side = "left"
    prompts = [prompt_text(tokenizer, e) for e in examples]
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="generating", leave=False, disable=not progress):
        rows = order[start:start + batch_size]
        batch = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        for i, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            answers[i] = text.strip()
    model.train(was_training)
    return answers


def evaluate_model(model, tokenizer, examples: Sequence[dict], batch_size: int | None = None,
                   max_new_tokens: int = 64) -> EvalReport:
    """Generate answers and score them with the task's exact metric."""
    return score_task(generate_answers(model, tokenizer, examples, max_new_tokens, batch_size), examples)
