"""Check command-line overrides against the schema before Hydra runs, for one-line errors.

Hydra rejects the same mistakes, but with several lines of context; here a typo in a key or a
group name gives `error: model.foo: unknown config key ...`, and a value of the wrong type
(`budget.flops=abc`, `seed=1.5`, `sweep.budgets=[abc]`) gives `error: budget.flops: value 'abc'
... could not be converted to Float`, each with exit code 2. Values are parsed with Hydra's own
override grammar and checked by assigning them to the structured schema with OmegaConf, the same
conversion Hydra applies, so this accepts exactly what Hydra accepts.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

GROUPS = ("model", "data", "sweep")


def _schema_fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _group_options(config_dir: Path, group: str) -> set[str]:
    options = {p.stem for p in (config_dir / group).glob("*.yaml")}
    if group == "model":
        from train.plan.shapes import CATALOG
        options |= set(CATALOG) | {"rule"}
    return options


def _type_problem(arg: str, key: str, schema) -> str | None:
    """Whether the override's value fits its field's type, as OmegaConf would convert it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    try:
        override = OverridesParser.create().parse_overrides([arg])[0]
    except Exception as error:  # noqa: BLE001 - Hydra's parse errors are several classes
        return f"{key}: cannot parse the override {arg!r} ({str(error).splitlines()[0]})"
    if override.is_sweep_override():
        return None  # a sweep (x=1,2) is for --multirun; each of its values is checked there
    value = override.value()
    config = OmegaConf.structured(schema)
    OmegaConf.set_struct(config, True)  # as Hydra composes it: a new key needs `+key=`
    try:
        OmegaConf.update(config, key, value, merge=True)
    except OmegaConfBaseException as error:
        message = str(error).splitlines()[0].strip()
        return f"{key}: {message[:1].lower()}{message[1:]}"
    return None


_RESOLVER = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*:")


def _resolver_problem(key: str, value: str) -> str | None:
    """Interpolations may only call registered resolvers (OmegaConf's oc.*, Hydra's now/hydra):
    none of them evaluates code, and an unknown one (e.g. `${eval:...}`) is refused up front."""
    names = _RESOLVER.findall(value)
    if not names:
        return None
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf
    setup_globals()  # registers Hydra's resolvers (now, hydra, python_version)
    for name in names:
        if not OmegaConf.has_resolver(name):
            return (f"{key}: unknown interpolation resolver {name!r} in {value!r}; interpolations cannot run "
                    "code (use ${oc.env:VAR}, ${oc.select:key,default}, ${now:...})")
    return None


def check_overrides(args: list[str], config_dir: Path, schema) -> str | None:
    """The first problem as a one-line message, or None when every override names a real key
    and holds a value of the right type."""
    for arg in args:
        if arg.startswith(("-", "+", "~", "hydra.", "hydra/")) or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        problem = _resolver_problem(key, value)
        if problem:
            return problem
        if key in GROUPS:
            options = _group_options(config_dir, key)
            if value not in options:
                return f"{key}: unknown {key} {value!r}; choose one of {', '.join(sorted(options))}"
            continue
        node, path = schema, []
        for part in key.split("."):
            path.append(part)
            if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
                break  # a dict-typed field (e.g. optim.lr_table) takes any key
            fields = _schema_fields(node)
            if part not in fields:
                return (f"{'.'.join(path)}: unknown config key; "
                        f"{'.'.join(path[:-1]) or 'the top level'} has {', '.join(sorted(fields))}")
            node = fields[part]
            if typing.get_origin(node) is typing.Union:  # Optional[X]
                node = next(a for a in typing.get_args(node) if a is not type(None))
        else:  # every part named a schema field: check the value's type
            if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
                problem = _type_problem(arg, key, schema)
                if problem:
                    return problem
    return None
