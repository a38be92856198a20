"""Your own training script as a sweep's program: `program: {command: ..., workdir: ...}`.

Each point runs the command instead of `hpcdl train`, under the same launcher (srun, mpirun,
horovodrun) for several ranks. `{key}` in the command is replaced by the point's value of that
setting as ONE shell word (strings as they are, other values as JSON: 0.001, true, [64, 32]);
`${VAR}` stays a shell variable. The point's settings also reach the script as $HPCDL_PARAMS
(JSON) and `params.yaml` in its run directory ($HPCDL_RUN_DIR); `hpcdl.session` reads both.

In the run directory, next to the files the script writes itself:
    params.yaml, params.json   the point's settings (dotted keys as in the spec)
    command.sh                 the command with this point's values filled in
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hpcdl import rundir
from hpcdl.errors import HpcdlError
from hpcdl.files import write_text_atomic
from hpcdl.shell import quote

PARAMS_YAML = "params.yaml"
PARAMS_JSON = "params.json"
COMMAND = "command.sh"

PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


def placeholders(command: str) -> list[str]:
    """The setting names a command refers to, in order of appearance."""
    return [m.group(1) for m in PLACEHOLDER.finditer(command)]


def shell_word(value: Any) -> str:
    """A setting's value as one shell word."""
    text = value if isinstance(value, str) else json.dumps(value)
    return quote(text)


def fill(command: str, settings: dict[str, Any], where: str = "program.command") -> str:
    """The command with every `{key}` replaced by that setting's value (one shell word each)."""

    def value_of(match: re.Match) -> str:
        key = match.group(1)
        if key not in settings:
            known = ", ".join(sorted(settings)) or "none"
            raise HpcdlError(f"{where}: {{{key}}} has no value in the spec (settings: {known})")
        return shell_word(settings[key])

    return PLACEHOLDER.sub(value_of, command)


def write_run_files(run_dir: Path, settings: dict[str, Any], command: str) -> None:
    """params.yaml, params.json and command.sh of one point."""
    rundir.write_yaml_atomic(run_dir / PARAMS_YAML, settings)
    write_text_atomic(run_dir / PARAMS_JSON, json.dumps(settings, sort_keys=True) + "\n")
    write_text_atomic(run_dir / COMMAND, command + "\n")
