#!/usr/bin/env python3
"""Print the README's variable tables from each role's meta/argument_specs.yml (the one source).

    python3 scripts/variables-table.py            # print
    python3 scripts/variables-table.py --check    # exit 1 if README.md is out of date
    python3 scripts/variables-table.py --write    # rewrite the section in README.md
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- variables: begin (scripts/variables-table.py) -->", "<!-- variables: end -->"


def cell(value) -> str:
    text = " ".join(value) if isinstance(value, list) else str(value)
    text = re.sub(r"C\(([^)]*)\)", r"`\1`", text)  # ansible-doc's C(code) markup
    return text.replace("|", "\\|").replace("\n", " ")


def tables() -> str:
    out = []
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta/argument_specs.yml").exists()):
        options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
        # a templated default has no value of its type for argument_specs; the table shows the template
        defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
        out += [f"Role `{role.name}`:", "", "| variable | type | default | what it does |", "|---|---|---|---|"]
        for name, spec in options.items():
            kind = spec["type"] + (f" of {spec['elements']}" if "elements" in spec else "")
            if "choices" in spec:
                kind += " (" + ", ".join(map(str, spec["choices"])) + ")"
            default = spec.get("default", defaults.get(name))
            shown = f"`{yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}`"
            out.append(f"| `{name}` | {kind} | {cell(shown)} | {cell(spec['description'])} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    generated = f"{BEGIN}\n{tables()}{END}"
    if not argv:
        print(generated)
        return 0
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    if argv == ["--check"]:
        if readme[start:end] != generated:
            print("README.md variable tables are out of date: run scripts/variables-table.py --write", file=sys.stderr)
            return 1
        return 0
    if argv == ["--write"]:
        (ROOT / "README.md").write_text(readme[:start] + generated + readme[end:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
