"""hpcdl.logparse: Keras' fit output (job.out) into per-epoch records. Real Keras output is
parsed in test_keras_session.py; here: Keras 3 lines as Keras 3.15 printed them, the rules,
and properties over generated logs and arbitrary text."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from hpcdl.logparse import parse, parse_file

# Keras 3.15, model.fit(verbose=1) then evaluate, written to a file (colour codes and all)
KERAS3_VERBOSE1 = (
    "Epoch 1/2\n"
    "\r\x1b[1m 1/12\x1b[0m \x1b[32m━\x1b[0m\x1b[37m━━━━━━━━━━━━━━━━━━━\x1b[0m \x1b[1m18s\x1b[0m "
    "2s/step - accuracy: 0.0938 - loss: 2.3191" + "\b" * 40 + "\r\x1b[1m12/12\x1b[0m "
    "\x1b[32m━━━━━━━━━━━━━━━━━━━━\x1b[0m\x1b[37m\x1b[0m \x1b[1m2s\x1b[0m 59ms/step - "
    "accuracy: 0.3359 - loss: 2.1631 - val_accuracy: 0.5312 - val_loss: 2.0194\n"
    "Epoch 2/2\n"
    "\r\x1b[1m12/12\x1b[0m \x1b[32m━━━━━━━━━━━━━━━━━━━━\x1b[0m\x1b[37m\x1b[0m \x1b[1m0s\x1b[0m "
    "17ms/step - accuracy: 0.7292 - loss: 1.7882 - val_accuracy: 0.6797 - val_loss: 1.6857\n"
    "\r\x1b[1m4/4\x1b[0m \x1b[32m━━━━━━━━━━━━━━━━━━━━\x1b[0m\x1b[37m\x1b[0m \x1b[1m0s\x1b[0m "
    "8ms/step - accuracy: 0.6797 - loss: 1.6857 \n"
)
# Keras 3.15, verbose=2
KERAS3_VERBOSE2 = (
    "Epoch 1/2\n12/12 - 5s - 388ms/step - accuracy: 0.3359 - loss: 2.1631 - val_accuracy: 0.5312"
    " - val_loss: 2.0194\nEpoch 2/2\n12/12 - 1s - 47ms/step - accuracy: 0.7292 - loss: 1.7882 - "
    "val_accuracy: 0.6797 - val_loss: 1.6857\n"
    "4/4 - 0s - 51ms/step - accuracy: 0.6797 - loss: 1.6857\n"
)
KERAS3_RECORDS = [
    {"epoch": 1, "accuracy": 0.3359, "loss": 2.1631, "val_accuracy": 0.5312, "val_loss": 2.0194},
    {"epoch": 2, "accuracy": 0.7292, "loss": 1.7882, "val_accuracy": 0.6797, "val_loss": 1.6857},
]


def test_keras3_output():
    assert parse(KERAS3_VERBOSE1) == KERAS3_RECORDS
    assert parse(KERAS3_VERBOSE2) == KERAS3_RECORDS


def test_rules():
    text = (
        "Epoch 1/3\n10/10 - 1s - loss: 0.5 - acc: 0.75 - val_loss: 0.6 - val_acc: 0.7\n"
        "Epoch 2/3\n10/10 - 1s - loss: nan - acc: 0.1\n"  # NaN is kept
        "Epoch 3/3\n 4/10 [=====>..] - ETA: 3s - loss: 0.2\n"  # killed mid-epoch: no record
    )
    records = parse(text)
    assert records[0] == {
        "epoch": 1,
        "loss": 0.5,
        "accuracy": 0.75,  # Keras' short names in metrics.jsonl's words
        "val_loss": 0.6,
        "val_accuracy": 0.7,
    }
    assert records[1]["epoch"] == 2 and math.isnan(records[1]["loss"]) and len(records) == 2
    # a restarted script prints epoch 2 again: it replaces epoch 2 and everything after
    again = text + "Epoch 2/3\n10/10 - 1s - loss: 0.4 - acc: 0.8\n"
    assert parse(again)[1:] == [{"epoch": 2, "loss": 0.4, "accuracy": 0.8}]
    # val_* printed on a later line of the same epoch; an unknown step count (first epoch of a
    # dataset without length) takes the last update
    split = "Epoch 1/1\n3/3 - loss: 1.0\n3/3 - loss: 1.0 - val_loss: 2.0\n"
    assert parse(split) == [{"epoch": 1, "loss": 1.0, "val_loss": 2.0}]
    unknown = (
        "Epoch 1/2\n  5/Unknown - 1s - loss: 0.9\r 9/Unknown - 2s - loss: 0.8\n3/3 - loss: 7.0\n"
    )
    assert parse(unknown) == [{"epoch": 1, "loss": 0.8}]
    assert parse("no keras here\n10/10 - loss: 0.1\n") == []  # progress without an epoch header


def test_parse_file(tmp_path):
    (tmp_path / "job.out").write_bytes(KERAS3_VERBOSE2.encode() + b"\xff\xfe garbage\n")
    assert parse_file(tmp_path / "job.out") == KERAS3_RECORDS
    assert parse_file(tmp_path / "missing.out") == []


# --- properties -----------------------------------------------------------------------------

NAMES = ["loss", "accuracy", "val_loss", "val_accuracy", "mae", "val_mae", "auc_1", "lr"]
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
epochs_metrics = st.lists(
    st.dictionaries(st.sampled_from(NAMES), values, min_size=1), min_size=1, max_size=6
)


def keras_number(value: float) -> str:
    return f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}"  # Keras 2's Progbar


def progress_line(style: int, steps: int, metrics: dict, final: bool) -> str:
    done = steps if final else max(1, steps // 2)
    shown = " - ".join(f"{name}: {keras_number(value)}" for name, value in metrics.items())
    if style == 1:  # Keras 2, verbose=1
        timing = " - 1s 25ms/step" if final else " - ETA: 3s"
        return f"{done:>{len(str(steps))}}/{steps} [{'=' * 30}]{timing} - {shown}"
    if style == 2:  # Keras 2, verbose=2 (only the final line)
        return f"{done}/{steps} - 1s - {shown} - 1s/epoch - 25ms/step"
    bar = "\x1b[32m" + "━" * 20 + "\x1b[0m"  # Keras 3, verbose=1
    return f"\x1b[1m{done}/{steps}\x1b[0m {bar} \x1b[1m1s\x1b[0m 25ms/step - {shown}"


@settings(max_examples=150, deadline=None)
@given(
    epochs_metrics,
    st.sampled_from([1, 2, 3]),
    st.integers(1, 500),
    st.lists(st.text(max_size=40).filter(lambda s: "Epoch" not in s and ":" not in s), max_size=4),
)
def test_generated_logs_give_back_their_records(metrics, style, steps, noise):
    text = "".join(f"{line}\n" for line in noise)
    for epoch, record in enumerate(metrics, start=1):
        text += f"Epoch {epoch}/{len(metrics)}\n"
        if style != 2:  # progress updates, overwritten with \r and backspaces
            text += "\r" + progress_line(style, steps, record, final=False) + "\b" * 12
        text += "\r" + progress_line(style, steps, record, final=True) + "\n"
    text += "".join(f"{line}\n" for line in noise)
    expected = [
        {"epoch": epoch, **{k: float(keras_number(v)) for k, v in record.items()}}
        for epoch, record in enumerate(metrics, start=1)
    ]
    assert parse(text) == expected


keras_fragments = st.sampled_from(
    ["Epoch ", "1", "/", "12", " ", " - ", "loss", ": ", "0.5", "nan", "1e999", "val_", "acc",
     "ETA", "[===>..]", "Unknown", "\r", "\n", "\b", "\x1b[1m", "━", "-", ":", "9" * 30]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(keras_fragments).map("".join)))
def test_any_text_gives_a_list_of_records_and_never_raises(text):
    records = parse(text)
    assert isinstance(records, list)
    epochs = [r["epoch"] for r in records]
    assert epochs == sorted(set(epochs))  # each epoch once, in order
    for record in records:
        assert isinstance(record["epoch"], int)
        assert all(isinstance(v, float) for k, v in record.items() if k != "epoch")
