"""course_utils.plots draws what it says, on the axes it is given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils.plots import plot_cumulative_energy, plot_singular_values  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_plot_singular_values_normalises_by_the_largest(ax):
    s = torch.tensor([4.0, 2.0, 1.0])
    assert plot_singular_values(ax, s, label="M") is ax
    x, y = ax.lines[0].get_data()
    assert list(x) == [1, 2, 3] and list(y) == [1.0, 0.5, 0.25]
    assert ax.get_yscale() == "log" and ax.get_legend() is not None


def test_plot_singular_values_raw(ax):
    plot_singular_values(ax, [4.0, 2.0], normalize=False)
    assert list(ax.lines[0].get_data()[1]) == [4.0, 2.0]
    assert ax.get_legend() is None


def test_plot_cumulative_energy_plots_the_energy_share_and_marks_the_fraction(ax):
    plot_cumulative_energy(ax, torch.tensor([3.0, 2.0, 1.0]), label="M", fraction=0.9)
    y = ax.lines[0].get_data()[1]
    assert [round(float(v), 6) for v in y] == [round(9 / 14, 6), round(13 / 14, 6), 1.0]
    assert len(ax.lines) == 2 and list(ax.lines[1].get_ydata()) == [0.9, 0.9]
