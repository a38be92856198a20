"""Registries: one per kind of extension (models, data sets, backends, search methods, report
sections). Built-ins register the same way a user's code does, and the schema, the CLI's choices
and the error messages read the registry instead of lists kept in step by hand.

    MODELS = Registry("model")

    @MODELS.register("mnist_cnn")
    def mnist_cnn(...): ...

    MODELS.get("mnist_cnn")            # the registered object
    MODELS.get("mypkg.nets:build")     # a user's `module:attribute`, imported on first use
    MODELS.names()                     # ["indian_pines_3dcnn", "indian_pines_spectral", ...]
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

from hpcdl.errors import HpcdlError

T = TypeVar("T")


class Schema(BaseModel):
    """Base of a registered extension's settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class UserCode(Schema):
    """Settings of a user's `module:function`: every key but `name` is a keyword argument."""

    model_config = ConfigDict(extra="allow")
    name: str
    _code: str | None = PrivateAttr(None)  # the config's `code` folder, set by TrainConfig

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def is_reference(name: str) -> bool:
    """Whether a name is a user's `module:attribute` rather than a registered name."""
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr)


@contextmanager
def code_path(folder: str | Path | None) -> Iterator[None]:
    """Put a user's code folder first on the import path while the block runs.

    Modules imported from the folder are forgotten afterwards, so another folder's module of the
    same name (another sweep, another test) is imported afresh rather than reused.
    """
    if folder is None:
        yield
        return
    entry = str(Path(folder).resolve())
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # files written since the last import are found
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(entry + "/"):
                del sys.modules[name]


def describe_error(err: BaseException) -> str:
    """`Type: first line of the message`, for one-line reports of a user's code failing."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def import_reference(reference: str, what: str = "object") -> Any:
    """Import `package.module:attribute` (the attribute may be dotted), one-line error if not."""
    module_name, _, attr = reference.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # a user's module may fail in any way while it imports
        raise HpcdlError(
            f"{what} {reference!r}: module {module_name!r} does not import ({describe_error(err)})"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise HpcdlError(f"{what} {reference!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def check_arguments(
    function: Any, kwargs: dict[str, Any], what: str, given: tuple[str, ...] = ()
) -> None:
    """One-line error unless `function(**kwargs)` binds: unknown or missing keys, by name.

    `given` are the arguments hpcdl passes itself (not keys of the user's section).
    """
    if not callable(function):
        raise HpcdlError(f"{what}: is a {type(function).__name__}, not a function")
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return  # no signature to check (a builtin): calling it will tell
    kinds = {p.kind for p in params.values()}
    named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        for key in kwargs:
            if key not in params:
                role = "must accept" if key in given else "has no keyword argument"
                accepts = ", ".join(n for n in named if n not in given) or "none"
                raise HpcdlError(f"{what}: {role} {key!r} (its keyword arguments: {accepts})")
    for name, p in params.items():
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            if name not in kwargs:
                raise HpcdlError(
                    f"{what}: missing key {name!r} (a keyword argument without default)"
                )
        elif p.kind == p.POSITIONAL_ONLY and p.default is p.empty:
            raise HpcdlError(f"{what}: argument {name!r} is positional-only; make it a keyword")


def call_user_code(
    registry: Registry,
    name: str,
    kwargs: dict[str, Any],
    what: str,
    role: str,
    given: tuple[str, ...] = (),
) -> Any:
    """Call a user's `module:function` from `registry` with keyword arguments, checked first;
    whatever it raises becomes one line naming `what` and its `role` (builder, loader)."""
    function = registry.get(name)
    check_arguments(function, kwargs, what, given=given)
    try:
        return function(**kwargs)
    except HpcdlError:
        raise
    except Exception as err:  # the user's code may fail in any way
        raise HpcdlError(f"{what}: the {role} failed ({describe_error(err)})") from None


class Registry(Generic[T]):
    """Named objects of one kind, each registered once."""

    def __init__(self, kind: str, allow_references: bool = False, reference: str = "function"):
        self.kind = kind
        self.allow_references = allow_references
        self.reference = reference  # what a user's `module:attribute` names, for messages
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register `obj` under `name`; without `obj`, return a decorator that does."""

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise HpcdlError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """The object registered as `name`, or a `module:attribute` where references are allowed."""
        if name in self._items:
            return self._items[name]
        if self.allow_references and is_reference(name):
            return import_reference(name, self.kind)
        options = [self.choices()] if self._items else []
        if self.allow_references:
            options.append(f"a 'module:{self.reference}' of your own")
        raise HpcdlError(f"unknown {self.kind} {name!r}; choose {' or '.join(options) or '-'}")

    def names(self) -> list[str]:
        return sorted(self._items)

    def in_order(self) -> list[T]:
        """The registered objects in the order they were registered (report sections)."""
        return list(self._items.values())

    def unregister(self, name: str) -> None:
        """Forget `name` (tests that register a toy extension clean up after themselves)."""
        self._items.pop(name, None)

    def choices(self) -> str:
        """'a, b or c': the registered names for messages."""
        names = self.names()
        if len(names) < 2:
            return "".join(names)
        return ", ".join(names[:-1]) + " or " + names[-1]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


def lazy(reference: str) -> Callable[..., Any]:
    """A callable importing `module:function` on first call (heavy imports wait until used)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return import_reference(reference, "built-in")(*args, **kwargs)

    call.__name__ = reference.rpartition(":")[2]
    return call
