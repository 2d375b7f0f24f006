"""What the site shows of a cell's output (tools/build_site.py): progress bars as Jupyter shows them, no
library loading bars, no machine paths."""

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from build_site import coalesce_streams  # noqa: E402


def stream(name, text):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_pages_keep_the_lessons_bars_and_warnings_but_not_loading_bars_or_machine_paths():
    outputs = [
        stream("stderr", "\rLoading weights:   0%|          | 0/272 [00:00<?, ?it/s]"),
        stream("stderr", "\rLoading weights: 100%|██████████| 272/272 [00:00<00:00, 7004.58it/s]\n"),
        stream("stderr", "/tmp/ci/main/.venv/lib/python3.11/site-packages/peft/tuners/lora/bnb.py:377: UserWarning: "
                         "Merge lora module to 4-bit linear may get different generations due to rounding errors.\n"),
        stream("stderr", f"{ROOT}/course_utils/train.py:12: UserWarning: a course warning\n"),
        stream("stderr", "\rgenerating:  50%|█████     | 1/2\rgenerating: 100%|██████████| 2/2 [01:13<00:00]\n"),
        stream("stdout", "Loading weights: 100%| is what this print says, on stdout\n"),
        stream("stdout", f"run folder: {ROOT}/.ci-cache/course/capstone/x, or {Path.home()}/.cache/lora-course/y\n"),
        stream("stderr", "\rWriting model shards: 100%|██████████| 1/1 [00:00<00:00,  1.07it/s]\n"),
    ]
    shown = coalesce_streams(outputs)
    assert [o.name for o in shown] == ["stderr", "stdout"]  # the last stderr held only a loading bar: dropped
    assert shown[0].text == (
        "peft/tuners/lora/bnb.py:377: UserWarning: Merge lora module to 4-bit linear may get different generations "
        "due to rounding errors.\n"
        "course_utils/train.py:12: UserWarning: a course warning\n"
        "generating: 100%|██████████| 2/2 [01:13<00:00]\n")
    assert shown[1].text.startswith("Loading weights: 100%| is what this print says")  # a print is kept
    assert shown[1].text.endswith("run folder: .ci-cache/course/capstone/x, or ~/.cache/lora-course/y\n")
