"""The registry every kind of extension uses: names, user references, one-line errors."""

from __future__ import annotations

import sys

import pytest

from hpcdl.errors import HpcdlError
from hpcdl.registry import Registry, code_path, import_reference


def test_registered_names_and_choices_in_errors():
    things = Registry("widget")
    things.register("b", 2)

    @things.register("a")
    def a():
        return 1

    assert things.get("a") is a and things.get("b") == 2
    assert things.names() == ["a", "b"] and "a" in things
    with pytest.raises(HpcdlError, match=r"unknown widget 'c'; choose a or b$"):
        things.get("c")
    with pytest.raises(HpcdlError, match="registered twice"):
        things.register("b", 3)


def test_user_reference_from_a_code_folder(tmp_path):
    (tmp_path / "mynets.py").write_text("def build(**kw):\n    return ('built', kw)\n")
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    models = Registry("model", allow_references=True)
    with code_path(tmp_path):
        assert models.get("mynets:build")(depth=2) == ("built", {"depth": 2})
        with pytest.raises(HpcdlError, match=r"'broken:x': module 'broken' does not import"):
            models.get("broken:x")
        with pytest.raises(HpcdlError, match=r"has no attribute 'nope'"):
            models.get("mynets:nope")
    assert str(tmp_path) not in sys.path  # the folder is off the import path again
    with pytest.raises(HpcdlError, match="does not import"):
        import_reference("mynets:build")  # its modules are forgotten too
    with pytest.raises(HpcdlError, match=r"choose a 'module:function' of your own$"):
        models.get("plain_name")
