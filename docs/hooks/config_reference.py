"""The config reference, generated from conf/ and the validation rules so that it cannot drift.

MkDocs runs this file as a hook (``hooks:`` in mkdocs.yml): ``on_files`` adds the page
``reference/config.md``, rendered by :func:`render` from every YAML file under ``conf/`` (its
values, its leading comment and the comments beside or above each key) and from the rules table
in ``trainer/app/validation.py``. tests/test_docs.py checks the rendered page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
PAGE = "reference/config.md"
DEFAULTS_ENTRY = re.compile(r"^\s*-\s*(?P<group>[\w/]+):(?P<rest>.*)$")
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[\w.\-]+):(?P<value>.*)$")


def _split_comment(text: str) -> tuple[str, str]:
    """A YAML line's value and its trailing comment (a ``#`` outside quotes)."""
    quote = None
    for i, char in enumerate(text):
        if char in "\"'" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), ""


def read_comments(path: Path) -> tuple[str, dict[str, str]]:
    """A YAML file's leading comment, and each key's comment (dotted path -> text): the
    comment lines just above the key, then the one beside it and the lines that continue it."""
    lines = path.read_text().splitlines()
    head: list[str] = []
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        text = lines[i].lstrip()[1:]
        if text.startswith("   "):  # an indented example command: shown as code
            head.append(f"`{text.strip()}`")
        elif not text.startswith(" @package"):
            head.append(text.strip())
        i += 1
    keys: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    last: str | None = None  # the key whose beside-comment the next comment lines continue
    for line in lines[i:]:
        stripped = line.strip()
        if not stripped:
            above, last = [], None
            continue
        if stripped.startswith("#"):
            if last is not None and len(line) - len(stripped) > len(stack[-1][1]) + 2:
                keys[last] += " " + stripped[1:].strip()
            else:
                above.append(stripped[1:].strip())
                last = None
            continue
        entry = DEFAULTS_ENTRY.match(line)
        if entry and stack and stack[-1][1] == "defaults":  # - group: option  # comment
            keys[f"defaults.{entry['group']}"] = _split_comment(entry["rest"])[1]
        match = KEY_LINE.match(line)
        if not match or stripped.startswith("-"):
            above, last = [], None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        dotted = ".".join(key for _, key in stack)
        _, beside = _split_comment(match["value"])
        text = " ".join([*above, beside]).strip()
        if text:
            keys[dotted] = text
        last = dotted if beside else None
        above = []
    return " ".join(head), keys


def _package(path: Path, group: str) -> str:
    """Where a group file's keys land: its ``# @package`` line, else the group's path."""
    first = path.read_text().splitlines()[:1]
    if first and first[0].startswith("# @package"):
        package = first[0].split(None, 2)[2].strip()
        return "" if package == "_global_" else package
    return group.replace("/", ".")


def _show(value: Any) -> str:
    """A default as it is typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, ListConfig)):
        targets = [v.get("_target_") for v in value if isinstance(v, (dict, DictConfig))]
        if targets and all(targets):
            return "list: " + ", ".join(t.rsplit(".", 1)[-1] for t in targets)
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _flatten(node: Any, prefix: str) -> list[tuple[str, Any]]:
    """Every leaf of a config node as (dotted key, value); lists stay whole."""
    if isinstance(node, (dict, DictConfig)) and node:
        items: list[tuple[str, Any]] = []
        for key, value in node.items():
            items += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return items
    return [(prefix, node)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else text


def _load(path: Path) -> dict[str, Any]:
    """A YAML file's values, interpolations kept as written (``${trainer.monitor}``)."""
    cfg = OmegaConf.load(path) if path.read_text().strip() else OmegaConf.create({})
    return OmegaConf.to_container(cfg, resolve=False)


def _rules() -> dict[str, str]:
    from torchcamp.trainer.app.validation import RULES

    return {key: allowed for key, (_, allowed) in RULES.items()}


def _root_section(rules: dict[str, str]) -> list[str]:
    path = CONF / "config.yaml"
    _, comments = read_comments(path)
    cfg = _load(path)
    out = [
        "## The root config",
        "",
        "`conf/config.yaml`: the groups a run starts from, and torchcamp's own keys. *Allowed* is",
        "what the rules table (`trainer/app/validation.py`) accepts; a value outside it is one",
        "line and exit code 2 before any work.",
        "",
        "### Defaults",
        "",
        "| group | default option | note |",
        "| --- | --- | --- |",
    ]
    for entry in cfg["defaults"]:
        if isinstance(entry, str):
            continue
        ((group, option),) = entry.items()
        out.append(
            f"| [`{group}`](#{group}) | {_code(_show(option))} "
            f"| {_cell(comments.get(f'defaults.{group}', ''))} |"
        )
    out += ["", "### Keys", "", "| key | default | allowed | meaning |"]
    out.append("| --- | --- | --- | --- |")
    body = {k: v for k, v in cfg.items() if k not in ("defaults", "hydra")}
    for key, value in _flatten(body, ""):
        out.append(
            f"| `{key}` | {_code(_cell(_show(value)))} | {_cell(rules.get(key, ''))} "
            f"| {_cell(comments.get(key, ''))} |"
        )
    return out


def _group_sections(rules: dict[str, str]) -> tuple[list[str], set[str]]:
    out: list[str] = []
    seen: set[str] = set()
    groups = sorted({p.parent.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")})
    for group in [g for g in groups if g != "."]:
        out += ["", f"## {group}", ""]
        for path in sorted((CONF / group).glob("*.yaml")):
            head, comments = read_comments(path)
            prefix = _package(path, group)
            out += [f"### `{group}={path.stem}`", "", head or "(no description)", ""]
            leaves = [
                (f"{prefix}.{key}" if prefix else key, value, key)
                for key, value in _flatten(_load(path), "")
                if key and key != "defaults" and not key.endswith(("_target_", "_partial_"))
            ]
            if leaves:
                out += ["| key | default | meaning |", "| --- | --- | --- |"]
            for full, value, key in leaves:
                seen.add(full)
                meaning = comments.get(key, "")
                if full in rules and not meaning:
                    meaning = "allowed: " + rules[full]
                out.append(f"| `{full}` | {_code(_cell(_show(value)))} | {_cell(meaning)} |")
            out.append("")
    return out, seen


def render() -> str:
    """The whole config reference page, as Markdown."""
    rules = _rules()
    out = [
        "# Config reference",
        "",
        "!!! note",
        "    Generated from `conf/` (every YAML file, its comments) and the rules table of",
        "    `trainer/app/validation.py` each time the site is built: edit those, not this page.",
        "",
        "Pick an option with `group=option`; change any value with `group.key=value`;",
        "`train --help` lists them and `train --cfg job` shows the composed result. A group's keys",
        "are those of the option chosen, merged over the root config's.",
        "",
        *_root_section(rules),
    ]
    groups, seen = _group_sections(rules)
    root = {key for key, _ in _flatten(_load(CONF / "config.yaml"), "")}
    others = [key for key in rules if key not in root and key not in seen]
    out += [
        "",
        "### Other checked keys",
        "",
        "Keys the rules table checks that the root config does not set (a group's file or a",
        "command's own options set them).",
        "",
        "| key | allowed |",
        "| --- | --- |",
        *[f"| `{key}` | {_cell(rules[key])} |" for key in others],
        *groups,
    ]
    return "\n".join(out) + "\n"


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated page to the site."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
