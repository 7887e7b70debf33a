"""One-line errors for a bad command line, taken from Hydra's own config loader.

Before the run, the command line is composed exactly as Hydra will compose it: Hydra's argument
parser, its search path (the shipped configs/, `--config-dir`, `hydra.searchpath`, the plugins'
configs), the structured schema in struct mode, group options from every config source. What
Hydra rejects in several lines of context comes out as one line with exit code 2:

    error: model.foo: unknown config key; model has aspect_ratio, attention, ...
    error: budget.flops: value 'abc' of type 'str' could not be converted to Float
    error: data: unknown data 'mycorpus'; choose one of embedded, parquet, text, ...

So a user's own configs (`--config-dir /my/conf data=mycorpus`, a launcher of their own) are
accepted exactly when Hydra accepts them. One check is ours alone: interpolations may only call
registered resolvers, so `${eval:...}` is refused before anything runs.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what it was raised from: Hydra re-raises OmegaConf's either `from` it or
    inside its handler."""
    chain = [error]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    return chain


def _omegaconf_problem(error, override_key: str | None) -> str:
    """An OmegaConf error (unknown key, wrong type) as `<key>: <what is wrong>`."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError
    key = getattr(error, "full_key", None) or override_key or ""
    message = _first_line(error)
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)):
        schema = getattr(error, "object_type", None)
        parent, _, name = key.rpartition(".")
        if isinstance(schema, type) and dataclasses.is_dataclass(schema):
            fields = ", ".join(sorted(f.name for f in dataclasses.fields(schema)))
            return f"{key}: unknown config key; {parent or 'the top level'} has {fields}"
        return f"{parent or key}: key {name!r} is not in struct (add a new key with +{key}=...)"
    return f"{key}: {message[:1].lower()}{message[1:]}" if key else message


def _missing_config_problem(error) -> str:
    """A group option that no config source has, with the options that exist."""
    missing = str(getattr(error, "missing_cfg_file", "") or "")
    options = sorted(getattr(error, "options", None) or [])
    if "/" in missing and options:
        group, name = missing.rsplit("/", 1)
        what = "launcher" if group == "hydra/launcher" else group
        return f"{group}: unknown {what} {name!r}; choose one of {', '.join(options)}"
    return _first_line(error)


def describe(error: BaseException) -> str:
    """Hydra's composition error as one line that starts with the field."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException
    chain = _chain(error)
    for candidate in chain:
        if isinstance(candidate, MissingConfigException):
            return _missing_config_problem(candidate)
    omegaconf = [c for c in chain if isinstance(c, OmegaConfBaseException)]
    if omegaconf:
        where = re.match(r"In '([^']+)':", str(error))  # the problem is inside a config file
        override = re.search(r"override '?([^\s=']+)=", str(error))  # "Error merging override key=value"
        problem = _omegaconf_problem(omegaconf[0], override.group(1) if override else None)
        return problem + (f" (in the config {where.group(1)})" if where else "")
    return _first_line(error)


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


VALUE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp")


def hydra_flags_first(args: list[str]) -> list[str]:
    """Hydra's options (`--config-dir DIR`, ...) before the overrides, wherever the user put them:
    Hydra's argument parser takes no option after the first override."""
    flags, rest, i = [], [], 0
    while i < len(args):
        if args[i] in VALUE_FLAGS and i + 1 < len(args):
            flags += args[i:i + 2]
            i += 2
            continue
        (flags if args[i].startswith("-") else rest).append(args[i])
        i += 1
    return flags + rest


def check_command_line(argv: list[str], config_dir: Path, config_name: str = "train") -> str | None:
    """The first problem of a `python -m train` command line as a one-line message, or None when
    Hydra composes its config. Commands that compose nothing (--help, --info, ...) pass."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.types import RunMode

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # argparse printed its usage line; let Hydra's own run say it again
        return None
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return None
    for override in args.overrides:
        if "=" in override and not override.startswith(("~", "--")):
            key, value = override.lstrip("+").split("=", 1)
            problem = _resolver_problem(key, value)
            if problem:
                return problem
    search_path = create_config_search_path(str(config_dir))
    if args.config_dir is not None:
        extra = os.path.abspath(args.config_dir)
        if not os.path.isdir(extra):
            return f"--config-dir: no such folder: {extra}"
        search_path.prepend(provider="command-line", path=f"file://{extra}",
                            anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
        hydra.compose_config(args.config_name or config_name, args.overrides,
                             run_mode=RunMode.MULTIRUN if args.multirun else RunMode.RUN)
    except Exception as error:  # noqa: BLE001 - Hydra raises many classes; each becomes one line
        return describe(error)
    finally:
        GlobalHydra.instance().clear()
    return None
