"""Self-checks of lesson 10: placeholder, typical wrong answers, right answer."""

from course_utils import checks
from course_utils.checks import NOT_ATTEMPTED, WRONG
from course_utils.hardware import GIB
from course_utils.memory import T4, load_config, model_layout, plan_memory, resolve_targets


def _too_big_plan():
    return plan_memory("qwen2.5-7b", "qlora", rank=16, batch=4, seq_len=1024, gradient_checkpointing=True,
                       optimizer="paged_adamw_8bit", profile=T4)


OPTIONS = {"a": {"rank": 4}, "b": {"optimizer": "sgd"}, "c": {"batch": 1}, "d": {"double_quant": False}}


def test_fitting_change():
    plan = _too_big_plan()
    available = T4.memory_gib * GIB
    assert not plan.fits(available)
    fitting = [k for k, change in OPTIONS.items() if plan.replan(**change).fits(available)]
    assert len(fitting) == 1  # the exercise has exactly one right answer
    right = fitting[0]
    assert checks.check_fitting_change(..., plan, T4, OPTIONS).status == NOT_ATTEMPTED
    assert checks.check_fitting_change(right, plan, T4, OPTIONS).correct
    assert checks.check_fitting_change(right.upper(), plan, T4, OPTIONS).correct
    for wrong in set(OPTIONS) - {right}:
        feedback = checks.check_fitting_change(wrong, plan, T4, OPTIONS)
        assert feedback.status == WRONG and "saves only" in feedback.message
    assert "letters" in checks.check_fitting_change("z", plan, T4, OPTIONS).message


def test_optimizer_steps():
    n, batch, accum, epochs = 2400, 2, 4, 3
    expected = sum(1 for _ in range(0, epochs * (n // batch), accum))  # one step per `accum` micro-batches
    assert checks.check_optimizer_steps(..., n, batch, accum, epochs).status == NOT_ATTEMPTED
    assert checks.check_optimizer_steps(expected, n, batch, accum, epochs).correct
    assert "micro-batches" in checks.check_optimizer_steps(epochs * n // batch, n, batch, accum, epochs).message
    assert "epochs" in checks.check_optimizer_steps(expected // epochs, n, batch, accum, epochs).message
    assert "effective batch" in checks.check_optimizer_steps(epochs * n, n, batch, accum, epochs).message
    assert checks.check_optimizer_steps(expected + 1, n, batch, accum, epochs).status == WRONG
    # an incomplete micro-batch is dropped: 7 examples in batches of 2 give 3 micro-batches per epoch
    assert checks.check_optimizer_steps(3, 7, 2, 1, 1).correct


def test_adapter_params():
    config = load_config("qwen2.5-7b")
    layout = model_layout(config)
    right = sum(16 * (lin.in_features + lin.out_features) for lin in resolve_targets(layout, "all-linear"))
    assert checks.check_config_adapter_params(..., config, 16).status == NOT_ATTEMPTED
    assert checks.check_config_adapter_params(right, config, 16).correct
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * h // config.num_attention_heads
    no_gqa = right + layers * 2 * 16 * (h - kv)  # k and v as if they were hidden x hidden
    assert "grouped-query" in checks.check_config_adapter_params(no_gqa, config, 16).message
    attention = sum(16 * (lin.in_features + lin.out_features) for lin in resolve_targets(layout, "attention"))
    assert "gate" in checks.check_config_adapter_params(attention, config, 16).message
    assert "one decoder layer" in checks.check_config_adapter_params(right // layers, config, 16).message
    assert "bytes" in checks.check_config_adapter_params(4 * right, config, 16).message
    assert checks.check_config_adapter_params(right + 1, config, 16).status == WRONG
    assert checks.check_config_adapter_params("forty million", config, 16).status == WRONG


def test_learning_rate_experiment_judges_the_run_and_the_prediction():
    from course_utils.train import TrainResult

    reference = TrainResult(losses=[1.8, 1.6, 1.6, 0.8, 0.8, 0.7])
    blown_up = TrainResult(losses=[1.8, 1.6, 1.3, 2.4, 2.6, 3.3])
    assert checks.check_learning_rate_experiment(..., ..., reference, 1e-2).status == NOT_ATTEMPTED
    assert checks.check_learning_rate_experiment("higher", blown_up, reference, 1e-2).correct
    wrong = checks.check_learning_rate_experiment("lower", blown_up, reference, 1e-2)
    assert wrong.status == WRONG and "overshoot" in wrong.message
    same = checks.check_learning_rate_experiment("higher", reference, reference, 1e-2)
    assert same.status == WRONG and "change the learning rate" in same.message
    other_start = TrainResult(losses=[1.9, 1.6, 1.3, 2.4, 2.6, 3.3])
    assert "fresh_start" in checks.check_learning_rate_experiment("higher", other_start, reference, 1e-2).message
    assert "set `observed`" in checks.check_learning_rate_experiment("higher", ..., reference, 1e-2).message
