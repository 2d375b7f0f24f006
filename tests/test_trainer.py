"""The Trainer path: resume equals an uninterrupted run, refuses other runs, stops on a non-finite loss.

Runs with a rank-2 LoRA on q_proj and v_proj, a handful of examples, batch 2 and
4 steps; on the two-layer mini model (tests/mini_model.py) where a test checks
mechanics, on the course's 135M model where its assertion reads what the model knows.
"""

import math
import shutil
from dataclasses import replace

import pytest
import torch

from course_utils import trainer as trainer_module
from course_utils.answers import answer_loss
from course_utils.data import load_examples, training_features
from course_utils.hardware import HardwareProfile
from course_utils.models import load_model, load_tokenizer
from course_utils.train import TrainConfig, trainable_state
from course_utils.trainer import (NonFiniteLossError, checkpoints_in, mixed_precision, planned_dtypes,
                                  prepare_for_training, train_with_trainer)
from mini_model import load_mini_model

STEPS = 4
TOLERANCE = 1e-6  # same float32 operations in the same order on the same machine: rounding only
T4 = HardwareProfile("cuda", "Tesla T4", 14.7, (7, 5), native_bf16=False)
A100 = HardwareProfile("cuda", "A100", 39.4, (8, 0), native_bf16=True)
CPU = HardwareProfile("cpu", "cpu", 16.0)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def examples():
    return load_examples("sql", "train", limit=8)


def lora_model(seed=0, r=2, targets=("q_proj", "v_proj"), real=False, base=None, **lora):
    """A LoRA model on the mini model, or on the course's 135M model (`real=True`), or on `base`."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = base if base is not None else load_model() if real else load_mini_model()
    return get_peft_model(base, LoraConfig(**dict(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                                  task_type="CAUSAL_LM") | lora))


def other_base_of_the_same_shapes():
    base = load_mini_model()
    with torch.no_grad():
        base.model.layers[0].mlp.up_proj.weight.mul_(1.01)
    return base


def config(**changes):
    return TrainConfig(**(dict(steps=STEPS, batch_size=2, learning_rate=1e-3, warmup_steps=1, seed=3,
                               checkpoint_every=2) | changes))


def test_resume_after_disconnect_equals_uninterrupted_run(tmp_path, tokenizer, examples):
    straight = lora_model()
    full = train_with_trainer(straight, tokenizer, examples, config(), output_dir=tmp_path / "straight")
    assert len(full.losses) == STEPS and full.resumed_from == 0 and full.tokens > 0

    part = train_with_trainer(lora_model(), tokenizer, examples, config(), output_dir=tmp_path / "resumed",
                              stop_after=2)
    assert len(part.losses) == 2 and [p.name for p in checkpoints_in(tmp_path / "resumed")] == ["checkpoint-2"]
    second = lora_model(seed=123)  # "a new runtime": another random A, overwritten by the checkpoint
    rest = train_with_trainer(second, tokenizer, examples, config(), output_dir=tmp_path / "resumed")
    assert rest.resumed_from == 2
    assert torch.allclose(torch.tensor(rest.losses), torch.tensor(full.losses), rtol=0, atol=TOLERANCE)
    expected, got = trainable_state(straight), trainable_state(second)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=0, atol=TOLERANCE), name
    start = trainable_state(lora_model())
    assert any(not torch.allclose(start[n], expected[n]) for n in expected)  # the weights did move

    finished = lora_model(seed=7)  # a third call: nothing left to train, the adapter is loaded
    again = train_with_trainer(finished, tokenizer, examples, config(), output_dir=tmp_path / "resumed")
    assert again.resumed_from == STEPS and again.tokens == 0 and again.losses == rest.losses
    assert all(torch.equal(trainable_state(finished)[n], got[n]) for n in got)


def test_a_finished_run_that_ended_inside_an_epoch_is_not_trained_further(tmp_path, tokenizer):
    many = load_examples("sql", "train", limit=4 * STEPS)  # two epochs' worth: the run ends mid-epoch
    first_model = lora_model()
    first = train_with_trainer(first_model, tokenizer, many, config(), output_dir=tmp_path)
    again_model = lora_model(seed=7)
    again = train_with_trainer(again_model, tokenizer, many, config(), output_dir=tmp_path)
    assert again.resumed_from == STEPS and again.losses == first.losses and again.tokens == 0
    assert [p.name for p in checkpoints_in(tmp_path)][-1] == f"checkpoint-{STEPS}"  # no step past the end
    trained, loaded = trainable_state(first_model), trainable_state(again_model)
    assert all(torch.equal(trained[n], loaded[n]) for n in trained)


def every_token_labelled(tokenizer, example, max_length):
    features = training_features(tokenizer, example, max_length)
    return {"input_ids": features["input_ids"], "labels": list(features["input_ids"])}


@pytest.mark.parametrize("change, message", [
    (dict(config=dict(learning_rate=2e-3)), "learning_rate"),
    (dict(model=dict(r=4)), "trainable parameters"),  # rank 2 checkpoint, rank 4 model
    (dict(model=dict(targets=("q_proj", "v_proj", "k_proj"))), "trainable parameters"),
    (dict(model=dict(lora_alpha=8)), "adapter 'default' lora_alpha: 4 in the folder, 8 now"),
    (dict(model=dict(use_rslora=True)), "use_rslora: False in the folder, True now"),
    (dict(model=dict(lora_dropout=0.1)), "lora_dropout: 0.0 in the folder, 0.1 now"),
    (dict(base="bf16"), "weight dtypes"),
    (dict(base="other"), "base model weights"),
    (dict(profile="T4"), "precision: 'no' in the folder, 'fp16' now"),
    (dict(data=True), "training data"),
    (dict(labels=True), "training data"),  # the same examples, the prompt labelled too (lesson 05's variant)
])
def test_a_folder_holding_another_run_is_refused_before_anything_changes(tmp_path, tokenizer, examples, change,
                                                                         message):
    train_with_trainer(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=2)
    base = {"bf16": lambda: load_mini_model(dtype=torch.bfloat16), "other": other_base_of_the_same_shapes,
            None: lambda: None}[change.get("base")]()
    model = lora_model(seed=5, base=base, **change.get("model", {}))
    before = trainable_state(model)
    data = load_examples("sql", "train", limit=10)[2:] if change.get("data") else examples
    labels = {"make_features": every_token_labelled} if change.get("labels") else {}
    profile = {"profile": T4} if change.get("profile") else {}
    with pytest.raises(ValueError, match=f"other settings.*{message}.*fresh output folder"):
        train_with_trainer(model, tokenizer, data, config(**change.get("config", {})), output_dir=tmp_path,
                           **labels, **profile)
    after = trainable_state(model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # refused before touching any weight
    # more steps is the same run, continued
    more = train_with_trainer(lora_model(seed=9), tokenizer, examples, config(steps=STEPS + 1), output_dir=tmp_path)
    assert more.resumed_from == 2 and len(more.losses) == STEPS + 1


def test_make_features_decides_the_labels_the_loss_reads(tokenizer, examples):
    """Lesson 05 trains its unmasked variant through the same path: the labels, not the tokens, differ."""
    masked = train_with_trainer(lora_model(real=True), tokenizer, examples, config(), stop_after=1)
    unmasked = train_with_trainer(lora_model(real=True), tokenizer, examples, config(), stop_after=1,
                                  make_features=every_token_labelled)
    assert len(masked.losses) == len(unmasked.losses) == 1
    assert masked.tokens == unmasked.tokens  # the same input ids
    assert unmasked.losses[0] != pytest.approx(masked.losses[0], rel=1e-3)  # the loss reads other labels


def test_checkpoints_without_settings_are_refused(tmp_path, tokenizer, examples):
    train_with_trainer(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=2)
    (tmp_path / trainer_module.RUN_FILE).unlink()
    with pytest.raises(ValueError, match="settings are unknown"):
        train_with_trainer(lora_model(), tokenizer, examples, config(), output_dir=tmp_path)


def test_two_checkpoints_are_kept_each_flushed_before_the_older_goes(tmp_path, tokenizer, examples, monkeypatch):
    events = []
    real_fsync, real_rmtree = trainer_module.os.fsync, trainer_module.shutil.rmtree
    monkeypatch.setattr(trainer_module.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(trainer_module.shutil, "rmtree",
                        lambda path, *a, **k: (events.append(f"delete {path.name}"), real_rmtree(path, *a, **k)))
    train_with_trainer(lora_model(), tokenizer, examples, config(checkpoint_every=1), output_dir=tmp_path)
    assert [p.name for p in checkpoints_in(tmp_path)] == ["checkpoint-3", "checkpoint-4"]
    deletions = [i for i, e in enumerate(events) if e.startswith("delete")]
    assert [events[i] for i in deletions] == ["delete checkpoint-1", "delete checkpoint-2"]
    assert all(events[i - 1] == "fsync" for i in deletions)  # the new checkpoint reached the disk first


def test_a_non_finite_loss_stops_before_the_update_and_before_any_checkpoint(tmp_path, tokenizer, examples):
    model = lora_model()
    calls = {"n": 0}

    def poison(module, inputs, output):  # the 3rd training forward overflows, as fp16 can
        calls["n"] += module.training
        return output * float("nan") if module.training and calls["n"] == 3 else output

    model.get_base_model().lm_head.register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError, match="step 3.*checkpoint-2"):
        train_with_trainer(model, tokenizer, examples, config(checkpoint_every=1), output_dir=tmp_path)
    assert [p.name for p in checkpoints_in(tmp_path)] == ["checkpoint-1", "checkpoint-2"]
    assert all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)  # step 3 changed nothing


def test_loss_is_normalised_by_answer_tokens_across_accumulation(tokenizer):
    """With accumulation, step 1's loss is total answer-token loss / total answer tokens of both micro-batches."""
    pair = load_examples("sql", "train", limit=40)
    pair = [min(pair, key=lambda e: len(e["answer"])), max(pair, key=lambda e: len(e["answer"]))]  # unequal lengths
    model = lora_model(real=True)  # a random model's per-token losses are all near ln(vocabulary): means would agree
    expected = answer_loss(model, tokenizer, pair)  # token-weighted mean at the initial weights (B = 0)
    per_example = [answer_loss(model, tokenizer, [e]) for e in pair]
    result = train_with_trainer(model, tokenizer, pair, config(steps=1, batch_size=1, grad_accum=2, warmup_steps=0,
                                                               checkpoint_every=None))
    assert math.isclose(result.losses[0], expected, rel_tol=1e-5)
    assert not math.isclose(expected, sum(per_example) / 2, rel_tol=1e-3)  # the mean of means would differ


def test_logits_only_where_labels_are_give_the_whole_batchs_loss_and_gradients(tokenizer):
    """`trim_to_answers` (training and the yardstick) computes the LM head on fewer positions, nothing else."""
    from course_utils.data import collate, trim_to_answers

    examples = load_examples("sql", "train", limit=6)
    batch = collate([training_features(tokenizer, e) for e in examples], tokenizer.pad_token_id)
    trimmed = trim_to_answers(batch)
    first = int((batch["labels"] != -100).any(dim=0).nonzero()[0])
    assert trimmed["logits_to_keep"] == batch["labels"].shape[1] - first + 1 < batch["labels"].shape[1]
    assert (batch["labels"][:, :first] == -100).all()  # what is cut holds no label
    model = lora_model()
    model.train()
    gradients, losses = [], []
    for inputs in (batch, trimmed):
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        losses.append(loss.item())
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert gradients[0].abs().max() > 0
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-5, atol=1e-7)
    everything = dict(batch, labels=batch["input_ids"].clone())  # every token labelled: nothing to cut
    assert trim_to_answers(everything)["logits_to_keep"] == batch["labels"].shape[1]


def test_generated_answers_come_back_in_the_examples_order_from_length_sorted_batches(tokenizer):
    """`generate_answers` batches prompts of similar length; each answer must still belong to its example."""
    from course_utils.answers import generate_answers
    from course_utils.data import prompt_text

    class AnswersWithItsPromptLength(torch.nn.Module):
        """A stand-in whose answer is the token whose id is the prompt's length (padding excluded)."""

        def __init__(self):
            super().__init__()
            self.weight, self.batches = torch.nn.Parameter(torch.zeros(1)), []

        def generate(self, input_ids, attention_mask, **kwargs):
            self.batches.append(attention_mask.sum(dim=1).tolist())
            return torch.cat([input_ids, attention_mask.sum(dim=1, keepdim=True)], dim=1)

    examples = load_examples("sql", "validation", limit=7)
    lengths = [len(tokenizer(prompt_text(tokenizer, e), add_special_tokens=False)["input_ids"]) for e in examples]
    assert lengths != sorted(lengths)  # else keeping the order would test nothing
    model = AnswersWithItsPromptLength()
    answers = generate_answers(model, tokenizer, examples, batch_size=3, progress=False)
    assert answers == [tokenizer.decode([n], skip_special_tokens=True).strip() for n in lengths]
    assert [n for batch in model.batches for n in batch] == sorted(lengths)  # shortest prompts first, together
    assert [len(batch) for batch in model.batches] == [3, 3, 1]


def test_answer_losses_come_back_in_the_examples_order_whatever_the_batching(tokenizer):
    """The yardstick batches examples of similar length; each value must still belong to its example."""
    from course_utils.answers import answer_token_losses

    examples = load_examples("sql", "validation", limit=7)
    lengths = [len(training_features(tokenizer, e)["input_ids"]) for e in examples]
    assert lengths != sorted(lengths)  # else keeping the order would test nothing
    model = load_mini_model()
    alone = [answer_token_losses(model, tokenizer, [e]) for e in examples]
    sums, counts = answer_token_losses(model, tokenizer, examples, batch_size=3)
    assert counts == [c[0] for _, c in alone]
    assert sums == pytest.approx([s[0] for s, _ in alone], rel=1e-5)
    # and each equals the plain computation: every position's logits, the shifted labels, prompt masked
    reference = []
    with torch.no_grad():
        for e in examples:
            features = training_features(tokenizer, e)
            logits = model(input_ids=torch.tensor([features["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(features["labels"][1:])
            reference.append(torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item())
    assert sums == pytest.approx(reference, rel=1e-5)


def test_validation_loss_is_recorded_from_step_0(tokenizer, examples):
    validation = load_examples("sql", "validation", limit=4)
    model = lora_model()
    start = answer_loss(model, tokenizer, validation)
    result = train_with_trainer(model, tokenizer, examples, config(eval_every=2, checkpoint_every=None),
                                eval_examples=validation)
    assert [step for step, _ in result.validation_losses] == [0, 2, 4]
    assert result.validation_losses[0][1] == pytest.approx(start, rel=1e-6)
    assert result.validation_losses[-1][1] == pytest.approx(answer_loss(model, tokenizer, validation), rel=1e-6)


def test_precision_follows_the_hardware():
    assert [mixed_precision(p) for p in (T4, A100, CPU)] == ["fp16", "bf16", "no"]
    assert planned_dtypes(T4) == {"weight_dtype": torch.float32, "unquantized_dtype": torch.float32}
    assert planned_dtypes(A100) == planned_dtypes(CPU) == {}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_prepare_keeps_the_residual_stream_in_fp32_only_on_fp16_devices(dtype):
    model = load_mini_model(dtype=dtype, device="cpu")
    assert prepare_for_training(model, A100) == 0 and prepare_for_training(model, CPU) == 0
    assert model.model.embed_tokens.weight.dtype == dtype
    moved = prepare_for_training(model, T4)
    assert moved == len(list(model.parameters())) > 0
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_eight_bit_optimizers_need_a_gpu(tokenizer, examples):
    with pytest.raises(ValueError, match="CUDA GPU"):
        train_with_trainer(lora_model(), tokenizer, examples, config(optimizer="paged_adamw_8bit"), profile=CPU)


def test_nothing_to_train_and_too_few_examples_are_clear_errors(tokenizer, examples):
    frozen = load_mini_model()
    frozen.requires_grad_(False)
    with pytest.raises(ValueError, match="No trainable parameters"):
        train_with_trainer(frozen, tokenizer, examples, config())
    with pytest.raises(ValueError, match="lower batch_size"):
        train_with_trainer(lora_model(), tokenizer, examples[:1], config())


def test_length_buckets_cut_padding_and_repeat_exactly():
    import random

    from course_utils.trainer import LengthBucketSampler

    rng = random.Random(0)
    lengths = [rng.randint(70, 200) for _ in range(1000)]
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=3)
    batches = sampler.batches()
    flat = [i for b in batches for i in b]
    assert all(len(b) == 8 for b in batches) and len(flat) == len(set(flat)) == len(sampler) == 1000
    assert batches == LengthBucketSampler(lengths, 8, seed=3).batches()  # a pure function: resume sees the same
    sampler.set_epoch(1)
    assert sampler.batches() != batches  # a new order every epoch

    def padded(batch_list):
        return sum(8 * max(lengths[i] for i in b) for b in batch_list) / sum(lengths)

    shuffled = list(range(1000))
    rng.shuffle(shuffled)
    random_batches = [shuffled[i:i + 8] for i in range(0, 1000, 8)]
    assert padded(batches) < 1.05 < 1.2 < padded(random_batches)


# --------------------------------------------------------------------------- checkpoints a disconnect cut off (issue 25 §2)

@pytest.mark.parametrize("damage", ["optimizer.pt missing", "scheduler.pt missing", "optimizer.pt truncated",
                                    "trainer_state.json missing", "adapter_model.safetensors truncated"])
def test_an_incomplete_newest_checkpoint_is_skipped_for_the_older_whole_one(tmp_path, tokenizer, examples, damage,
                                                                            capsys):
    straight = train_with_trainer(lora_model(), tokenizer, examples, config(checkpoint_every=1),
                                  output_dir=tmp_path / "straight")
    folder = tmp_path / "resumed"
    train_with_trainer(lora_model(), tokenizer, examples, config(checkpoint_every=1), output_dir=folder, stop_after=3)
    assert [p.name for p in checkpoints_in(folder)] == ["checkpoint-2", "checkpoint-3"]
    name, how = damage.split()
    path = folder / "checkpoint-3" / name
    path.unlink() if how == "missing" else path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    model = lora_model(seed=7)
    rest = train_with_trainer(model, tokenizer, examples, config(checkpoint_every=1), output_dir=folder)
    printed = capsys.readouterr().out
    assert rest.resumed_from == 2 and f"checkpoint-3 is incomplete ({name}" in printed
    assert "resuming from checkpoint-2" in printed and (folder / "incomplete-checkpoint-3" / "adapter_config.json").exists()
    assert torch.allclose(torch.tensor(rest.losses), torch.tensor(straight.losses), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("damage", ["optimizer.pt missing", "scheduler.pt missing", "optimizer.pt truncated"])
def test_a_run_whose_only_checkpoint_is_incomplete_is_refused_before_any_weight_changes(tmp_path, tokenizer,
                                                                                         examples, damage):
    train_with_trainer(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=2)
    name, how = damage.split()
    path = tmp_path / "checkpoint-2" / name
    path.unlink() if how == "missing" else path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    model = lora_model(seed=5)
    before = trainable_state(model)
    with pytest.raises(ValueError, match=f"no complete checkpoint \\(checkpoint-2: {name} .*delete"):
        train_with_trainer(model, tokenizer, examples, config(), output_dir=tmp_path)
    assert all(torch.equal(before[n], w) for n, w in trainable_state(model).items())


KILL_MID_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from transformers import Trainer
from course_utils.data import load_examples
from course_utils.models import load_tokenizer
from course_utils.trainer import train_with_trainer
from test_trainer import config, lora_model

real_save_rng = Trainer._save_rng_state
def save_rng(self, output_dir):
    if self.state.global_step == 3:  # weights, optimizer and scheduler written; RNG and trainer_state.json not
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save_rng(self, output_dir)
Trainer._save_rng_state = save_rng
train_with_trainer(lora_model(), load_tokenizer(), load_examples("sql", "train", limit=8),
                   config(checkpoint_every=1), output_dir={folder!r})
"""


def test_a_training_process_killed_mid_save_resumes_from_the_newest_whole_checkpoint(tmp_path, tokenizer, examples,
                                                                                     capsys):
    """The Colab disconnect lesson 09 promises to survive: a real kill while checkpoint-3 is being written."""
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "killed"
    script = KILL_MID_SAVE.format(tests=str(Path(__file__).parent), folder=str(folder))
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (folder / "checkpoint-3" / "optimizer.pt").exists() and not (folder / "checkpoint-3" / "trainer_state.json").exists()
    straight = train_with_trainer(lora_model(), tokenizer, examples, config(checkpoint_every=1),
                                  output_dir=tmp_path / "straight")
    rest = train_with_trainer(lora_model(seed=11), tokenizer, examples, config(checkpoint_every=1), output_dir=folder)
    assert rest.resumed_from == 2 and "checkpoint-3 is incomplete (trainer_state.json is missing" in capsys.readouterr().out
    assert torch.allclose(torch.tensor(rest.losses), torch.tensor(straight.losses), rtol=0, atol=TOLERANCE)
    assert [p.name for p in checkpoints_in(folder)] == ["checkpoint-3", "checkpoint-4"]


def test_the_trainer_path_refuses_a_course_loop_folder(tmp_path, tokenizer, examples):
    from course_utils.train import train

    train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="run of the course loop.*course_utils.train.train.*fresh output folder"):
        train_with_trainer(lora_model(), tokenizer, examples, config(), output_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_checkpoints_saved_in_other_legitimate_forms_are_complete(tmp_path):
    """Sharded weights with an index and the old pickle files are whole checkpoints; an adapter needs its config."""
    import json as json_module

    from safetensors.torch import save_file

    from course_utils.trainer import checkpoint_problem

    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json_module.dumps({"global_step": 3}))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"x": torch.ones(2)}, checkpoint / name)
    assert "holds no weights" in checkpoint_problem(checkpoint)
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        save_file({"w": torch.ones(3)}, checkpoint / shard)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (checkpoint / "model.safetensors.index.json").write_text(json_module.dumps(index))
    assert checkpoint_problem(checkpoint) is None
    shard = checkpoint / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4])
    assert "model-00002-of-00002.safetensors is" in checkpoint_problem(checkpoint)
    for path in checkpoint.glob("model*"):
        path.unlink()
    torch.save({"w": torch.ones(3)}, checkpoint / "adapter_model.bin")
    assert checkpoint_problem(checkpoint) == "adapter_config.json is missing or damaged"
    (checkpoint / "adapter_config.json").write_text("{}")
    assert checkpoint_problem(checkpoint) is None
    assert checkpoint_problem(checkpoint, needs_scaler=True) == "scaler.pt is missing"
