"""The course training loop: resume equals an uninterrupted run, seeded batches, clear errors, adapter cache.

Runs on the two-layer mini model (tests/mini_model.py: the course's loading path, SmolLM2's
architecture and vocabulary, random weights) with a rank-2 LoRA on q_proj and v_proj, 8
examples, batch 2 and 4 steps: every assertion here is about mechanics, not knowledge.
"""

import json

import pytest
import torch

from course_utils import adapters as adapters_module
from course_utils import trainer as trainer_module
from course_utils.adapters import (AdapterSettings, adapter_dir, base_example_losses, load_base_for, read_train_log,
                                   split_examples, train_adapter, train_lora_adapter)
from course_utils.answers import answer_loss
from course_utils.hardware import detect
from course_utils.data import evenly_spaced, load_examples
from course_utils.models import MODEL_DIR_ENV, load_tokenizer
from course_utils.train import (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, TrainConfig, batch_indices, learning_rate_factor, train,
                                trainable_state)
from mini_model import load_mini_model, mini_model_dir

STEPS = 4
# Resumed and uninterrupted runs execute the same float32 operations in the same order on the same
# machine, so they should agree to rounding; this tolerance allows for nothing more.
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def examples():
    return load_examples("sql", "train", limit=8)


def lora_model(seed: int = 0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # LoRA's A is drawn at random: same seed, same start
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return get_peft_model(load_mini_model(), config)


def config(**changes):
    return TrainConfig(**(dict(steps=STEPS, batch_size=2, learning_rate=1e-3, warmup_steps=1, seed=3) | changes))


def test_resume_after_disconnect_equals_uninterrupted_run(tmp_path, tokenizer, examples):
    straight = lora_model()
    full = train(straight, tokenizer, examples, config(), output_dir=tmp_path / "straight")
    assert len(full.losses) == STEPS and full.resumed_from == 0

    first = lora_model()
    part = train(first, tokenizer, examples, config(), output_dir=tmp_path / "resumed", stop_after=2)
    assert len(part.losses) == 2
    del first  # the "disconnect": a fresh process builds a new model (with a different random A)
    second = lora_model(seed=123)
    rest = train(second, tokenizer, examples, config(), output_dir=tmp_path / "resumed")
    assert rest.resumed_from == 2
    assert torch.allclose(torch.tensor(rest.losses), torch.tensor(full.losses), rtol=0, atol=TOLERANCE)
    expected, got = trainable_state(straight), trainable_state(second)
    assert expected.keys() == got.keys() and len(expected) > 0
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=0, atol=TOLERANCE), name
    # the weights did move: the comparison is not between two untouched initialisations
    start = trainable_state(lora_model())
    assert any(not torch.allclose(start[n], expected[n]) for n in expected)


def test_finished_run_is_not_trained_again(tmp_path, tokenizer, examples):
    model = lora_model()
    train(model, tokenizer, examples, config(), output_dir=tmp_path)
    again = train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path)
    assert again.resumed_from == STEPS and again.tokens == 0


def test_checkpoint_of_another_model_is_refused(tmp_path, tokenizer, examples):
    from peft import LoraConfig, get_peft_model

    train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=1)
    other = get_peft_model(load_mini_model(), LoraConfig(r=2, target_modules=["k_proj"], task_type="CAUSAL_LM"))
    with pytest.raises(ValueError, match="fresh output folder"):
        train(other, tokenizer, examples, config(), output_dir=tmp_path)


@pytest.mark.parametrize("rank, changes, message", [
    (8, {}, "trainable parameters"),  # an r=1 checkpoint must not broadcast into r=8 weights
    (1, {"learning_rate": 5e-3}, "learning_rate"),  # a new learning rate is another run, not a resume
])
def test_resume_refuses_other_settings_before_touching_weights(tmp_path, tokenizer, examples, rank, changes, message):
    from peft import LoraConfig, get_peft_model

    def model_of_rank(r):
        torch.manual_seed(0)
        return get_peft_model(load_mini_model(), LoraConfig(r=r, target_modules=["q_proj"], task_type="CAUSAL_LM"))

    train(model_of_rank(1), tokenizer, examples, config(), output_dir=tmp_path, stop_after=1)
    model = model_of_rank(rank)
    before = trainable_state(model)
    with pytest.raises(ValueError, match=f"other settings.*{message}.*fresh output folder"):
        train(model, tokenizer, examples, config(**changes), output_dir=tmp_path)
    assert all(torch.equal(before[n], w) for n, w in trainable_state(model).items())


@pytest.mark.parametrize("damage", [b"", b"\x00" * 100, b"not a checkpoint at all", "truncate"])
def test_a_damaged_checkpoint_names_the_file_and_the_fix(tmp_path, tokenizer, examples, damage):
    train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=1)
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:500] if damage == "truncate" else damage)
    with pytest.raises(ValueError, match="checkpoint.pt cannot be read") as error:
        train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path)
    assert str(tmp_path) in str(error.value) and "delete" in str(error.value)
    assert "weights_only" not in str(error.value)


def test_the_course_loop_refuses_fp16_weights(tokenizer, examples):
    model = load_mini_model(dtype=torch.float16, device="cpu")
    for name, param in model.named_parameters():
        param.requires_grad = name.endswith("q_proj.weight")
    with pytest.raises(ValueError, match="loss scaler.*train_with_trainer"):
        train(model, tokenizer, examples, config())


def test_batch_indices_are_a_seeded_shuffle_per_epoch():
    n, size = 10, 3  # 3 full batches per epoch, one example left out each epoch
    first_epoch = [batch_indices(n, size, step, seed=7) for step in range(3)]
    assert first_epoch == [batch_indices(n, size, step, seed=7) for step in range(3)]  # pure function
    flat = [i for batch in first_epoch for i in batch]
    assert len(set(flat)) == 9 and all(0 <= i < n for i in flat)  # no repeats within an epoch
    assert all(len(batch) == size for batch in first_epoch)
    assert [batch_indices(n, size, s, seed=8) for s in range(3)] != first_epoch
    assert [batch_indices(n, size, s, seed=7) for s in range(3, 6)] != first_epoch  # next epoch, new order
    with pytest.raises(ValueError, match="lower batch_size"):
        batch_indices(2, 3, 0, seed=0)


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=20, warmup_steps=4)
    assert [learning_rate_factor(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate_factor(4, cfg) == pytest.approx(1.0)
    assert learning_rate_factor(20, cfg) == pytest.approx(0.1)
    factors = [learning_rate_factor(s, cfg) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


@pytest.mark.parametrize("changes, message", [
    (dict(steps=0), "positive"), (dict(batch_size=0), "positive"), (dict(grad_accum=-1), "positive"),
    (dict(optimizer="adam"), "Unknown optimizer"), (dict(steps=2.5), "positive integer"),
    (dict(steps=True), "positive integer"), (dict(max_length=0), "positive integer"),
    (dict(learning_rate=-1e-3), "finite number"), (dict(learning_rate=float("nan")), "finite number"),
    (dict(learning_rate=0), "trains nothing"), (dict(checkpoint_every=0), "positive integer"),
    (dict(gradient_checkpointing="yes"), "True or False"),
])
def test_bad_train_config(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_nothing_to_train_is_an_error(tokenizer, examples):
    model = load_mini_model()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="No trainable parameters"):
        train(model, tokenizer, examples, config())


@pytest.mark.skipif(torch.cuda.is_available(), reason="8-bit optimizers run on a GPU")
def test_8bit_optimizer_needs_a_gpu(tokenizer, examples):
    with pytest.raises(ValueError, match="CUDA GPU"):
        train(lora_model(), tokenizer, examples, config(optimizer="paged_adamw_8bit"))


def test_too_long_example_is_an_error(tokenizer, examples):
    with pytest.raises(ValueError, match="raise max_length"):
        train(lora_model(), tokenizer, examples, config(max_length=16))


@pytest.mark.parametrize("changes, message", [
    (dict(r=0), "positive integer"), (dict(r=True), "positive integer"), (dict(r=2.0), "positive integer"),
    (dict(lora_alpha=0), "finite positive"), (dict(lora_alpha=float("nan")), "finite positive"),
    (dict(lora_alpha=float("inf")), "finite positive"), (dict(steps=0), "positive integer"),
    (dict(learning_rate=float("inf")), "finite number"), (dict(quantization="nf5"), "quantization"),
    (dict(task="xml"), "task must be one of"), (dict(model_id=42), "model_id must be a model name"),
    (dict(targets=()), "non-empty tuple of module names"), (dict(targets=None), "targets must be"),
    (dict(targets=5), "targets must be"), (dict(targets=("q_proj", "")), "non-empty tuple"),
])
def test_bad_adapter_settings_are_refused_up_front(changes, message):
    with pytest.raises(ValueError, match=message):
        AdapterSettings(**changes)


def test_unknown_target_set():
    with pytest.raises(ValueError, match="Unknown target set"):
        AdapterSettings(targets="mlp")
    assert AdapterSettings(targets=("q_proj",)).target_modules() == ["q_proj"]


def test_adapter_is_cached_by_its_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(MODEL_DIR_ENV, str(mini_model_dir()))  # the course's model id, the mini model's weights
    monkeypatch.setattr(adapters_module, "VALIDATION_EXAMPLES", 4)  # the curve's size is not under test here
    settings = AdapterSettings(r=1, targets="qv", steps=2, batch_size=2)
    folder = train_lora_adapter(settings)
    assert folder == adapter_dir(settings) and folder.is_relative_to(tmp_path)
    for name in ("adapter_model.safetensors", "adapter_config.json", "train_log.json"):
        assert (folder / name).exists(), name
    assert not (folder / "checkpoint").exists()
    log = read_train_log(folder)
    assert len(log["losses"]) == 2 and [step for step, _ in log["validation_losses"]] == [0, 1, 2]
    # The curve's first point is the base model's answer loss, read from the base model's cache: LoRA's B
    # starts at zero, so the model before the first step computes what the base model computes.
    cached_base = base_example_losses("sql", "validation", 4, whole_split_on_gpu=False)
    assert log["validation_losses"][0][1] == cached_base.mean
    direct = answer_loss(load_base_for(settings), load_tokenizer(), split_examples("sql", "validation", 4))
    assert cached_base.mean == pytest.approx(direct, rel=TOLERANCE)
    stamp = (folder / "adapter_model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a cached adapter must not be trained again")

    monkeypatch.setattr(trainer_module, "train_with_trainer", no_training)
    assert train_lora_adapter(settings) == folder
    assert (folder / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    other = AdapterSettings(r=1, targets="qv", steps=2, batch_size=2, seed=1)  # one knob differs: new folder
    assert adapter_dir(other) != folder
    with pytest.raises(AssertionError, match="must not be trained"):
        train_lora_adapter(other)
    with pytest.raises(AssertionError, match="must not be trained"):
        train_lora_adapter(settings, force=True)


def test_a_run_that_does_not_start_as_its_base_computes_its_first_curve_point(tmp_path, monkeypatch):
    """Only a plain LoRA start reads the base model's cached value; an edited start (LoftQ, PiSSA) is measured."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(MODEL_DIR_ENV, str(mini_model_dir()))
    monkeypatch.setattr(adapters_module, "VALIDATION_EXAMPLES", 4)
    settings = AdapterSettings(r=1, targets="qv", steps=2, batch_size=2)
    validation = split_examples("sql", "validation", 4)

    def nudged(model):  # B no longer zero: the start differs from the base model
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.5)
        nudged.start = answer_loss(model, load_tokenizer(), validation)

    _, result = train_adapter(settings, detect(), None, before_training=nudged)
    base = base_example_losses("sql", "validation", 4, whole_split_on_gpu=False).mean
    assert result.validation_losses[0][1] == pytest.approx(nudged.start, rel=TOLERANCE)
    assert abs(nudged.start - base) > 1e-3, "the nudge should move the start away from the base model"


def test_the_course_loop_records_a_validation_curve(tokenizer, examples):
    validation = load_examples("sql", "validation", limit=3)
    model = lora_model()
    start = answer_loss(model, tokenizer, validation)
    result = train(model, tokenizer, examples, config(eval_every=2), eval_examples=validation)
    assert [step for step, _ in result.validation_losses] == [0, 2, 4]
    assert result.validation_losses[0][1] == pytest.approx(start, rel=1e-6)
    assert result.validation_losses[-1][1] == pytest.approx(answer_loss(model, tokenizer, validation), rel=1e-6)


def test_two_processes_asking_for_one_adapter_train_it_once(tmp_path):
    """CI runs two notebooks side by side: the second waits for the first's adapter instead of training it too."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import json, sys, time
        from course_utils import adapters, trainer
        from course_utils.adapters import AdapterSettings, train_lora_adapter
        adapters.VALIDATION_EXAMPLES = 2  # the curve is not under test here
        real, calls = trainer.train_with_trainer, []
        def counted(*args, **kwargs):
            calls.append(time.time())
            time.sleep(2)  # long enough for the other process to arrive while this one trains
            return real(*args, **kwargs)
        trainer.train_with_trainer = counted
        train_lora_adapter(AdapterSettings(r=1, targets="qv", steps=1, batch_size=2))
        print(json.dumps(len(calls)))
    """)
    env = dict(__import__("os").environ, COURSE_CACHE_DIR=str(tmp_path), OMP_NUM_THREADS="1",
               **{MODEL_DIR_ENV: str(mini_model_dir())})
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    trained = [int(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(trained) == [0, 1]


def test_base_model_results_are_computed_once_per_question_set(tmp_path, monkeypatch):
    """Lessons 04 and 09 and their solutions read one base generation and one base yardstick."""
    from course_utils import qlora
    from course_utils.evaluate import EvalReport, ScoredExample

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    generated, scored = [], []

    def fake_evaluate(model, tokenizer, examples):
        generated.append(len(examples))
        return EvalReport([ScoredExample(e["id"], True, 1.0, "match", "SELECT 1;", e["group"]) for e in examples])

    def fake_losses(model, tokenizer, examples):
        scored.append(model)
        return [float(len(examples))] * len(examples), [2] * len(examples)

    monkeypatch.setattr(adapters_module, "evaluate_model", fake_evaluate)
    monkeypatch.setattr(adapters_module, "answer_token_losses", fake_losses)
    monkeypatch.setattr("course_utils.models.load_model", lambda **kwargs: "base")
    monkeypatch.setattr("course_utils.models.load_tokenizer", lambda *args, **kwargs: "tokenizer")
    monkeypatch.setattr(qlora, "load_format", lambda quantization, double_quant, profile: (quantization, double_quant))

    first = adapters_module.base_report(n=4)
    assert adapters_module.base_report(n=4).results == first.results and generated == [4]
    adapters_module.base_report(n=6)  # other questions: another generation
    assert generated == [4, 6] and [r.group for r in first.results] == [
        e["group"] for e in evenly_spaced(load_examples("sql", "test"), 4)]

    plain = adapters_module.base_example_losses(n=3)
    assert adapters_module.base_example_losses(n=3).mean == plain.mean == pytest.approx(1.5)
    adapters_module.base_example_losses(n=3, quantization="nf4", double_quant=True)
    assert scored == [(None, False), ("nf4", True)]  # each storage format scored once


@pytest.fixture
def adapter_without_model(tmp_path, monkeypatch):
    """Stand-ins for an adapter "trained" into tmp_path: nothing loaded; returns the log of what was computed."""
    from course_utils.evaluate import EvalReport, ScoredExample

    calls = []
    monkeypatch.setattr(adapters_module, "train_lora_adapter", lambda settings, profile=None: tmp_path)
    monkeypatch.setattr(adapters_module, "load_adapted_model", lambda settings, profile=None: "adapted")
    monkeypatch.setattr("course_utils.models.load_tokenizer", lambda *args, **kwargs: "tokenizer")
    monkeypatch.setattr(adapters_module, "answer_token_losses", lambda model, tokenizer, examples: (
        calls.append(("losses", [e["id"] for e in examples])) or ([0.5] * len(examples), [1] * len(examples))))
    monkeypatch.setattr(adapters_module, "evaluate_model", lambda model, tokenizer, examples: (
        calls.append(("report", [e["id"] for e in examples])) or EvalReport(
            [ScoredExample(e["id"], False, 0.0, "error", "", e["group"]) for e in examples])))
    return calls


def test_adapter_results_are_computed_once_and_kept_next_to_the_adapter(tmp_path, adapter_without_model):
    settings = AdapterSettings(steps=2, batch_size=2)
    losses = [adapters_module.adapter_example_losses(settings, n=5) for _ in range(2)]
    reports = [adapters_module.adapter_report(settings, n=3) for _ in range(2)]
    assert [what for what, _ in adapter_without_model] == ["losses", "report"]
    assert losses[0] == losses[1] and losses[0].mean == pytest.approx(0.5)
    assert reports[0].results == reports[1].results and len(reports[0].results) == 3
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["losses-validation-5.json", "report-test-3.json"]


def test_the_transfer_check_is_scored_like_a_split_and_keyed_by_its_questions(tmp_path, adapter_without_model):
    """benchmarks/sql_task.py scores the hand-written check through the same cached reports as the test split."""
    from course_utils.data import load_transfer_examples

    questions = load_transfer_examples()
    for _ in range(2):
        report = adapters_module.adapter_report(AdapterSettings(steps=2, batch_size=2), adapters_module.TRANSFER_SPLIT)
    assert adapter_without_model == [("report", [e["id"] for e in questions])]  # once, on every hand-written question
    assert {r.group for r in report.results} == {"transfer"} and len(report.results) == len(questions)
    (name,) = [p.name for p in tmp_path.glob("report-transfer-*.json")]
    assert name != "report-transfer-all.json"  # an edited check gets a new report, not the stale one
    with pytest.raises(ValueError, match="SQL only"):
        adapters_module.split_examples("json", adapters_module.TRANSFER_SPLIT)


def test_seed_runs_trains_the_seeds_asked_for_in_order_and_prints_each(monkeypatch, capsys):
    from course_utils.compare import ExampleLosses

    asked = []

    def fake_losses(settings, profile=None):
        asked.append(settings)
        return ExampleLosses.of([float(settings.seed + 1)], [1])

    monkeypatch.setattr(adapters_module, "adapter_example_losses", fake_losses)
    profile = detect()
    one_cell = adapters_module.seed_runs("arm", profile, seeds=adapters_module.SEEDS[1:], r=4)
    assert [s.seed for s in asked] == list(adapters_module.SEEDS[1:]) and all(s.r == 4 for s in asked)
    assert [run.mean for run in one_cell] == [seed + 1.0 for seed in adapters_module.SEEDS[1:]]
    assert capsys.readouterr().out.splitlines() == [f"arm, seed {seed}: answer loss {seed + 1.0:.4f}"
                                                    for seed in adapters_module.SEEDS[1:]]
    asked.clear()
    assert len(adapters_module.seed_runs("arm", profile)) == len(adapters_module.SEEDS)
    assert [s.seed for s in asked] == list(adapters_module.SEEDS)
    with pytest.raises(ValueError, match="part of SEEDS"):
        adapters_module.seed_runs("arm", profile, seeds=[7])
    with pytest.raises(ValueError, match="part of SEEDS"):
        adapters_module.seed_runs("arm", profile, seeds=[])


def test_gpu_results_are_cached_apart_from_cpu_results_and_from_each_other(tmp_path, monkeypatch):
    """A T4 (fp16) and an A100 (bf16) train other adapters than a CPU (fp32): `make gpu-check` must not read
    a CPU-trained adapter, base score or full fine-tune as its own; a CPU keeps its existing cache keys."""
    from course_utils.full_finetune import full_finetune_dir, full_finetune_settings
    from course_utils.hardware import HardwareProfile

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    cpu = HardwareProfile(kind="cpu", name="a CPU", memory_gib=24.0)
    t4 = HardwareProfile(kind="cuda", name="Tesla T4", memory_gib=14.7, compute_capability=(7, 5))
    a100 = HardwareProfile(kind="cuda", name="A100", memory_gib=39.4, compute_capability=(8, 0), native_bf16=True)
    assert cpu.result_key() == {}
    assert t4.result_key() == {"device": "cuda", "compute_dtype": "float16"}
    assert a100.result_key()["compute_dtype"] == "bfloat16"
    settings = AdapterSettings(r=1, targets="qv", steps=2, batch_size=2)
    folders = {p.name: adapter_dir(settings, p) for p in (cpu, t4, a100)}
    assert len(set(folders.values())) == 3
    from dataclasses import asdict
    import hashlib

    from course_utils.cache import settings_key
    from course_utils.data import data_path

    train_data = hashlib.sha256(data_path("sql", "train").read_bytes()).hexdigest()
    before = settings_key(asdict(settings) | {"train_data": train_data})  # the key before devices were in it
    assert folders["a CPU"].name == f"sql-r1-{before}"  # a CPU's cached adapters are still found
    full = full_finetune_settings(cpu, steps=2, batch_size=2)
    assert len({full_finetune_dir(full, p) for p in (cpu, t4, a100)}) == 3


# --------------------------------------------------------------------------- resume refuses every other run (issue 25 §2)

def peft_model(seed: int = 0, base=None, **lora):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    settings = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM") | lora
    return get_peft_model(base if base is not None else load_mini_model(), LoraConfig(**settings))


def other_base_of_the_same_shapes():
    base = load_mini_model()
    with torch.no_grad():
        base.model.layers[0].mlp.up_proj.weight.mul_(1.01)
    return base


def course_lora_model(alpha: float):
    from course_utils.lora import LoraConfig as CourseLoraConfig, inject_lora, mark_only_lora_trainable

    torch.manual_seed(0)
    return mark_only_lora_trainable(inject_lora(load_mini_model(), CourseLoraConfig(
        r=2, lora_alpha=alpha, target_modules=("q_proj",))))


@pytest.mark.parametrize("make_first, make_second, message", [
    (lambda: peft_model(), lambda: peft_model(lora_alpha=8), "adapter 'default' lora_alpha: 4 in the folder, 8 now"),
    (lambda: peft_model(), lambda: peft_model(use_rslora=True), "use_rslora: False in the folder, True now"),
    (lambda: peft_model(), lambda: peft_model(lora_dropout=0.1), "lora_dropout: 0.0 in the folder, 0.1 now"),
    (lambda: peft_model(), lambda: peft_model(base=load_mini_model(dtype=torch.bfloat16)), "weight dtypes"),
    (lambda: peft_model(), lambda: peft_model(base=other_base_of_the_same_shapes()), "base model weights"),
    (lambda: course_lora_model(4), lambda: course_lora_model(8), "lora_alpha: 4 in the folder, 8 now"),
])
def test_resume_refuses_a_run_that_computes_something_else(tmp_path, tokenizer, examples, make_first, make_second,
                                                           message):
    """lora_alpha, rsLoRA, dropout, the base's dtype, another base of the same shapes: each is another run."""
    train(make_first(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=1)
    model = make_second()
    before = trainable_state(model)
    with pytest.raises(ValueError, match=f"other settings.*{message}.*fresh output folder"):
        train(model, tokenizer, examples, config(), output_dir=tmp_path)
    assert all(torch.equal(before[n], w) for n, w in trainable_state(model).items())
    again = train(make_first(), tokenizer, examples, config(), output_dir=tmp_path)  # the same run resumes
    assert again.resumed_from == 1


def test_a_signature_written_before_a_field_existed_is_another_run(tmp_path, tokenizer, examples):
    train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=1)
    path = tmp_path / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    signature = json.loads(state["signature"])
    del signature["model"]
    state["signature"] = json.dumps(signature)
    torch.save(state, path)
    with pytest.raises(ValueError, match="model \\(not recorded in the folder"):
        train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path)


@pytest.mark.parametrize("damage, message", [
    ("signature", "cannot be read"),
    ("optimizer", "optimizer or schedule state does not fit"),
    ("weights", "does not hold this model's trainable weights"),
])
def test_a_damaged_part_of_a_checkpoint_is_refused_before_any_weight_changes(tmp_path, tokenizer, examples, damage,
                                                                              message):
    train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=1)
    path = tmp_path / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    if damage == "signature":
        state["signature"] = state["signature"][:-7]  # cut-off JSON
    elif damage == "optimizer":
        state["optimizer"]["param_groups"].append(dict(state["optimizer"]["param_groups"][0]))
    else:
        state["trainable"].pop(sorted(state["trainable"])[0])
    torch.save(state, path)
    model = lora_model(seed=5)
    before = trainable_state(model)
    with pytest.raises(ValueError, match=message) as error:
        train(model, tokenizer, examples, config(), output_dir=tmp_path)
    assert str(tmp_path) in str(error.value) and "delete" in str(error.value)
    assert all(torch.equal(before[n], w) for n, w in trainable_state(model).items())


@pytest.mark.parametrize("stop_after", [0, -2, 1.5, True, "2"])
def test_stop_after_must_be_a_positive_number_of_steps(tmp_path, tokenizer, examples, stop_after):
    with pytest.raises(ValueError, match="stop_after must be None"):
        train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=stop_after)
    assert not any(tmp_path.iterdir())


def test_two_checkpoints_are_kept_and_a_damaged_newest_one_falls_back(tmp_path, tokenizer, examples, capsys):
    straight = train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path / "straight")
    folder = tmp_path / "resumed"
    train(lora_model(), tokenizer, examples, config(checkpoint_every=1), output_dir=folder, stop_after=3)
    steps = {name: torch.load(folder / name, weights_only=True)["step"] for name in (CHECKPOINT_FILE,
                                                                                      PREVIOUS_CHECKPOINT_FILE)}
    assert steps == {CHECKPOINT_FILE: 3, PREVIOUS_CHECKPOINT_FILE: 2}
    newest = folder / CHECKPOINT_FILE
    newest.write_bytes(newest.read_bytes()[:1000])  # a disk that lost the end of the newest file
    model = lora_model(seed=7)
    rest = train(model, tokenizer, examples, config(checkpoint_every=1), output_dir=folder)
    assert rest.resumed_from == 2 and "resuming from checkpoint.previous.pt, step 2" in capsys.readouterr().out
    assert (folder / "checkpoint.damaged.pt").exists()
    assert torch.allclose(torch.tensor(rest.losses), torch.tensor(straight.losses), rtol=0, atol=TOLERANCE)


def test_each_checkpoint_reaches_the_disk_before_it_replaces_the_last(tmp_path, tokenizer, examples, monkeypatch):
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), real_replace(a, b))[1])
    train(lora_model(), tokenizer, examples, config(checkpoint_every=2), output_dir=tmp_path)
    newest = str(tmp_path / CHECKPOINT_FILE)
    renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == newest]
    assert len(renames) == 2  # step 2 and step 4
    for i in renames:
        assert ("fsync", events[i][1]) in events[:i]  # the new file's bytes were on the disk first
        assert events[i + 1] == ("fsync", str(tmp_path))  # and the rename itself right after


KILL_MID_SAVE = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
import course_utils.train as course_train
from course_utils.data import load_examples
from course_utils.models import load_tokenizer
from test_train import config, lora_model

saves = {{"n": 0}}
real_save = torch.save
def save(obj, handle, *args, **kwargs):
    saves["n"] += 1
    if saves["n"] == 3:  # the third checkpoint: half of it written, then the process is killed
        handle.write(b"half a checkpoint")
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, handle, *args, **kwargs)
course_train.torch.save = save
course_train.train(lora_model(), load_tokenizer(), load_examples("sql", "train", limit=8),
                   config(checkpoint_every=1), output_dir={folder!r})
"""


def test_a_training_process_killed_mid_save_resumes_from_its_last_whole_checkpoint(tmp_path, tokenizer, examples):
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "killed"
    script = KILL_MID_SAVE.format(tests=str(Path(__file__).parent), folder=str(folder))
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (folder / (CHECKPOINT_FILE + ".partial")).exists()  # the cut-off write
    straight = train(lora_model(), tokenizer, examples, config(checkpoint_every=1), output_dir=tmp_path / "straight")
    rest = train(lora_model(seed=11), tokenizer, examples, config(checkpoint_every=1), output_dir=folder)
    assert rest.resumed_from == 2
    assert torch.allclose(torch.tensor(rest.losses), torch.tensor(straight.losses), rtol=0, atol=TOLERANCE)


def test_the_course_loop_refuses_a_trainer_folder(tmp_path, tokenizer, examples):
    from course_utils.trainer import train_with_trainer

    train_with_trainer(lora_model(), tokenizer, examples, config(checkpoint_every=1), output_dir=tmp_path,
                       stop_after=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="run of transformers' Trainer.*train_with_trainer.*fresh output folder"):
        train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_cached_adapter_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """A kernel killed while the adapter is saved leaves no adapter file; the next call finishes the run."""
    from pathlib import Path

    from peft import PeftModel

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(MODEL_DIR_ENV, str(mini_model_dir()))
    monkeypatch.setattr(adapters_module, "VALIDATION_EXAMPLES", 4)
    settings = AdapterSettings(r=1, targets="qv", steps=2, batch_size=2)
    real_save = PeftModel.save_pretrained

    def killed_mid_save(self, folder, *args, **kwargs):
        real_save(self, folder, *args, **kwargs)
        if not str(folder).endswith("finished.partial"):  # the Trainer's checkpoints save through it too
            return
        weights = Path(folder) / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])  # half written when the kernel died
        raise KeyboardInterrupt

    monkeypatch.setattr(PeftModel, "save_pretrained", killed_mid_save)
    with pytest.raises(KeyboardInterrupt):
        train_lora_adapter(settings)
    folder = adapter_dir(settings)
    assert not (folder / "adapter_model.safetensors").exists() and not (folder / "train_log.json").exists()
    monkeypatch.setattr(PeftModel, "save_pretrained", real_save)
    assert train_lora_adapter(settings) == folder  # the run's checkpoint is complete: nothing trains again
    assert read_train_log(folder)["resumed_from"] == 2 and not (folder / "finished.partial").exists()
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # an adapter damaged after the fact (an older version, a disk)
    with pytest.raises(ValueError, match="adapter_model.safetensors is .* bytes.*force=True"):
        train_lora_adapter(settings)


def test_numpy_integers_are_plain_ints_in_every_settings_object():
    """TrainConfig, AdapterSettings and the capstone's recipe all accept NumPy integers and store ints, so equal
    settings name one cache folder and one run signature (some refused them, others kept them as NumPy)."""
    import numpy as np

    from course_utils.capstone import QLoRARecipe

    config = TrainConfig(steps=np.int64(4), batch_size=np.int32(2), seed=np.int64(3), learning_rate=np.float32(1e-3))
    assert (config.steps, config.batch_size, config.seed) == (4, 2, 3) and type(config.steps) is int
    assert type(config.learning_rate) is float
    settings = AdapterSettings(r=np.int64(4), steps=np.int64(2), batch_size=np.int64(2), seed=np.int64(1))
    assert settings == AdapterSettings(r=4, steps=2, batch_size=2, seed=1) and type(settings.r) is int
    assert adapter_dir(settings) == adapter_dir(AdapterSettings(r=4, steps=2, batch_size=2, seed=1))
    recipe = QLoRARecipe(rank=np.int64(8))
    assert recipe == QLoRARecipe(rank=8) and type(recipe.rank) is int
    for bad in (dict(seed=-1), dict(seed=1.5), dict(optimizer=["adamw"]), dict(log_every=0)):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_the_weight_fingerprint_reads_large_tensors_and_tells_bases_apart():
    """A 7B model's embedding has hundreds of millions of values: positions counted in float32 ran past the end."""
    from course_utils.train import weight_fingerprint

    large = torch.nn.Embedding(49152 * 11, 64)  # 34.6 million values, the size that failed (28.3 million) and more
    large.weight.requires_grad_(False)
    first = weight_fingerprint(large)
    with torch.no_grad():
        large.weight[-1, -1] += 1  # the last value is one of those read
    assert weight_fingerprint(large) != first
    large.weight.requires_grad_(True)  # trainable weights are restored from the checkpoint, not fingerprinted
    assert weight_fingerprint(large) == weight_fingerprint(torch.nn.Embedding(1, 1).requires_grad_(True))


def test_a_field_only_one_library_version_has_is_not_a_difference(tmp_path, tokenizer, examples):
    """Colab reinstalls the libraries after a disconnect: a newer PEFT or transformers whose config has one more
    field must not refuse the run; a field both versions have still must match."""
    train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path, stop_after=1)
    path = tmp_path / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    signature = json.loads(state["signature"])
    signature["model"]["adapter"]["default"]["a_field_of_an_older_peft"] = 3
    del signature["model"]["base_config"]["vocab_size"]  # as if an older transformers had not written it
    state["signature"] = json.dumps(signature)
    torch.save(state, path)
    assert train(lora_model(), tokenizer, examples, config(), output_dir=tmp_path).resumed_from == 1


def test_a_stale_cache_checkpoint_names_force_as_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(MODEL_DIR_ENV, str(mini_model_dir()))
    monkeypatch.setattr(adapters_module, "VALIDATION_EXAMPLES", 4)
    settings = AdapterSettings(r=1, targets="qv", steps=2, batch_size=2)
    stale = adapter_dir(settings) / "checkpoint"
    stale.mkdir(parents=True)
    (stale / trainer_module.RUN_FILE).write_text("{not json")  # an earlier version's, or a damaged save
    with pytest.raises(ValueError, match="course cache's folder.*train_lora_adapter\\(settings, force=True\\)"):
        train_lora_adapter(settings)
    assert train_lora_adapter(settings, force=True) == adapter_dir(settings)
