"""Training configuration: the schema of one run, validated before anything is written.

A config has four sections: ``model`` (architecture), ``data`` (data set and its preparation),
``train`` (optimisation and run mechanics) and ``run_dir``, and ``code`` (a folder with a user's
model / data modules) where one is used. ``model`` and ``data`` are validated by the schema
registered under their ``name`` (hpcdl.models.MODELS, hpcdl.datasets.DATASETS), or name a user's
``module:function``. Sweeps vary keys by dotted path, e.g. ``train.lr`` or ``model.dropout``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from hpcdl.datasets import IndianPinesData, MnistData  # noqa: F401  (the schemas' old home)
from hpcdl.errors import HpcdlError
from hpcdl.models import IndianPines3DCNN, IndianPinesSpectral, MnistCNN  # noqa: F401
from hpcdl.registry import Schema as _Strict


# ---------------------------------------------------------------- models and data
class SectionError(ValueError):
    """A model or data section that its registered schema rejected (keeps pydantic's details)."""

    def __init__(self, error: ValidationError):
        super().__init__(str(error))
        self.error = error


def _section(raw: Any, kind_of: Callable[[str], Any], what: str) -> Any:
    """Validate a `model` / `data` mapping with the schema registered under its `name`."""
    if isinstance(raw, BaseModel):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping with a name, got {raw!r}")
    if "name" not in raw:
        raise ValueError(f"give the {what}'s name")
    if not isinstance(raw["name"], str):
        raise ValueError(f"name must be a string, got {raw['name']!r}")
    try:
        kind = kind_of(raw["name"])
    except HpcdlError as err:
        raise ValueError(str(err)) from None
    try:
        return kind.schema.model_validate(raw)
    except ValidationError as err:
        raise SectionError(err) from None


# ---------------------------------------------------------------- training
class TrainSettings(_Strict):
    """Optimisation and run mechanics. ``batch_size`` is per rank (Horovod convention)."""

    epochs: Annotated[int, Field(gt=0)] = 10
    batch_size: Annotated[int, Field(gt=0)] = 128
    optimizer: Literal["sgd", "adam", "rmsprop", "adagrad", "adamw"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 0.001
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    schedule: Literal["inverse_time", "cosine", "step"] = "inverse_time"
    decay: Annotated[float, Field(ge=0)] = 0.0
    step_epochs: Annotated[int, Field(gt=0)] = 30
    step_factor: Annotated[float, Field(gt=0, le=1)] = 0.1
    scale_lr: bool = True
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    loss: Literal["categorical_crossentropy", "mse", "mae"] = "categorical_crossentropy"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # flips: each training window flipped and turned by a random one of its 8 symmetries
    augment: Literal["none", "flips"] = "none"
    seed: int = 0
    deterministic: bool = True
    steps_per_epoch: Annotated[int, Field(gt=0)] | None = None
    eval_batch_size: Annotated[int, Field(gt=0)] = 1000
    keep: Literal["last", "best"] = "last"
    threads: Annotated[int, Field(gt=0)] | None = None
    # fp16: gradients travel between ranks as float16 (Horovod's Compression.fp16), half the
    # bytes per step over a slow network; each rank applies the same averaged gradients
    compression: Literal["none", "fp16"] = "none"


class TrainConfig(_Strict):
    """Everything one training run needs. ``code``: a folder with the user's model / data code."""

    code: str | None = None
    model: SerializeAsAny[BaseModel]
    data: SerializeAsAny[BaseModel]
    train: TrainSettings = TrainSettings()
    run_dir: str | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, raw: Any) -> BaseModel:
        from hpcdl.models import model_kind

        return _section(raw, model_kind, "model")

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, raw: Any) -> BaseModel:
        from hpcdl.datasets import data_kind

        return _section(raw, data_kind, "data set")

    @field_validator("code")
    @classmethod
    def _code_folder(cls, folder: str | None) -> str | None:
        if folder is not None and not Path(folder).expanduser().is_dir():
            raise ValueError(f"no folder {folder!r} (the folder with your model / data code)")
        return None if folder is None else str(Path(folder).expanduser().resolve())

    @model_validator(mode="after")
    def _model_fits_data(self) -> TrainConfig:
        from hpcdl.models import model_kind

        wants = model_kind(self.model.name).data
        if wants and self.data.name not in wants:
            raise ValueError(
                f"model {self.model.name!r} trains on data {' or '.join(map(repr, wants))}, "
                f"not {self.data.name!r}"
            )
        for section in (self.model, self.data):
            if hasattr(section, "_code"):
                section._code = self.code  # where a user's builder / loader is imported from
        return self

    @model_serializer(mode="wrap")
    def _without_empty_code(self, handler: Any) -> dict[str, Any]:
        # configs without user code dump as they did before `code` existed (same point ids)
        out = handler(self)
        if out.get("code", 0) is None:
            del out["code"]
        return out


# ---------------------------------------------------------------- loading
def format_validation_error(err: ValidationError, source: str, within: str = "") -> str:
    """One line: where, which key, what value, what was expected."""
    first = err.errors()[0]
    parts = [within] if within else []
    parts += [str(p) for p in first["loc"] if not str(p).startswith("function-after")]
    loc = ".".join(parts)
    inner = first.get("ctx", {}).get("error")
    if isinstance(inner, SectionError):  # a model / data schema's own error: model.filters
        return format_validation_error(inner.error, source, loc)
    msg = first["msg"].removeprefix("Value error, ")
    where = f"{source}: {loc}" if loc else source
    extra = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    if first["type"] in ("missing", "extra_forbidden", "union_tag_invalid", "value_error"):
        return f"{where}: {msg}{extra}"
    return f"{where}: {msg}, got {first.get('input')!r}{extra}"


def parse_config(raw: Any, source: str = "config") -> TrainConfig:
    """Validate a mapping into a TrainConfig, raising HpcdlError with a one-line message."""
    if not isinstance(raw, dict):
        raise HpcdlError(f"{source}: expected a mapping with model, data and train sections")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise HpcdlError(format_validation_error(err, source)) from None


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with a one-line error for a missing or malformed file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HpcdlError(f"{path}: no such file") from None
    except OSError as err:
        raise HpcdlError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise HpcdlError(f"{path}:{at} invalid YAML ({getattr(err, 'problem', err)})") from None


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training config file."""
    return parse_config(read_yaml(path), str(path))


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain data (lists, not tuples) for YAML/JSON output."""
    return config.model_dump(mode="json")


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections as needed."""
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise HpcdlError(f"{dotted}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=0.1", "model.filters=[8,16]"]`` -> {path: YAML-parsed value}."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise HpcdlError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=0.01")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise HpcdlError(f"--set {item!r}: value is not valid YAML") from None
    return out
