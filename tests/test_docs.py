"""The README and docs/ stay true to the code: length, links, reachability, commands.

Every command in a fenced code block of README.md or docs/**/*.md that runs
`python -m <module>` (also in `for` loops, after `&&` or environment
assignments) must name a module that exists; for this project's absl entry
points every `--flag` must be one the module defines, and every `--config.X`
override (and `--sweep` / `--overrides` field) a field of the config it
applies to. `python launch/<script>.py` commands are checked against the
script's argparse flags, and the groups after `--` against experiments.train.
Flags are read from the sources (no entry point is run), so this is fast.
"""

import functools
import importlib.util
import os
import re
import shlex
from typing import Dict, Iterator, List, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
MAX_README_LINES = 250
DEFAULT_CONFIG = "experiments/configs/dfp.py"  # experiments.train's default --config

LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
FLAG_DEF = re.compile(r"\bDEFINE_(\w+)\(\s*[\"'](\w+)[\"']")
ARGPARSE_DEF = re.compile(r"add_argument\(\s*[\"'](--[\w-]+)[\"']")
ABSL_HELP_FLAGS = {"help", "helpshort", "helpfull", "helpxml", "flagfile", "undefok", "v"}


def rel(path: str) -> str:
  return os.path.relpath(path, ROOT)


def doc_files() -> List[str]:
  files = [README]
  for d, _, names in os.walk(DOCS):
    files += [os.path.join(d, n) for n in sorted(names) if n.endswith(".md")]
  return files


def read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def prose_lines(path: str) -> Iterator[Tuple[int, str]]:
  """(line number, text) of the lines outside fenced code blocks, code spans removed."""
  fenced = False
  for n, line in enumerate(read(path).split("\n"), 1):
    if line.lstrip().startswith("```"):
      fenced = not fenced
      continue
    if not fenced:
      yield n, CODE_SPAN.sub("``", line)


def code_blocks(path: str) -> Iterator[List[Tuple[int, str]]]:
  """Each fenced code block as [(line number, text)]."""
  block: Optional[List[Tuple[int, str]]] = None
  for n, line in enumerate(read(path).split("\n"), 1):
    if line.lstrip().startswith("```"):
      if block is None:
        block = []
      else:
        yield block
        block = None
    elif block is not None:
      block.append((n, line))


def links(path: str) -> Iterator[Tuple[int, str]]:
  """(line, target) of every relative link or image, anchors stripped."""
  for n, line in prose_lines(path):
    for target in LINK.findall(line):
      if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
        continue  # http(s), mailto, ...; a same-page anchor
      target = target.split("#", 1)[0]
      if target:
        yield n, target


def resolve(path: str, target: str) -> str:
  return os.path.normpath(os.path.join(os.path.dirname(path), target))


# ---------------------------------------------------------------------------- pages


def test_readme_is_short():
  with open(README, encoding="utf-8") as f:
    count = f.read().count("\n")  # as `wc -l` counts
  assert count <= MAX_README_LINES, f"README.md has {count} lines (at most {MAX_README_LINES})"


def test_relative_links_exist():
  broken = [f"{rel(p)}:{n}: {t}" for p in doc_files() for n, t in links(p)
            if not os.path.exists(resolve(p, t))]
  assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
  seen, todo = set(), [README]
  while todo:
    page = todo.pop()
    if page in seen:
      continue
    seen.add(page)
    for _, target in links(page):
      dest = resolve(page, target)
      if os.path.isdir(dest):
        dest = os.path.join(dest, "README.md")
      if dest.endswith(".md") and os.path.isfile(dest):
        todo.append(dest)
  pages = [os.path.join(DOCS, n) for n in os.listdir(DOCS) if n.endswith(".md")]
  pages += [os.path.join(DOCS, d, "README.md") for d in os.listdir(DOCS)
            if os.path.isfile(os.path.join(DOCS, d, "README.md"))]
  orphans = sorted(rel(p) for p in pages if os.path.normpath(p) not in seen)
  assert not orphans, "docs pages no link from the README leads to: " + ", ".join(orphans)


def test_readme_rules():
  """The README keeps the two commands CI runs, and no dates, issue numbers or private
  references (those belong to the dated pages under docs/)."""
  text = read(README)
  assert '## Two commands' in text
  block = text.split("## Two commands", 1)[1].split("```")[1].strip("\n").split("\n")
  assert block[0].startswith('pip install -c constraints.txt -e ".[test,robomimic]" && '
                             'python -m experiments.train'), block
  assert block[1].split("#")[0].strip() == "pytest", block
  assert '-c constraints.txt -e ".[test,robomimic]"' in read(os.path.join(ROOT, ".ci", "run"))
  problems = [f"README.md:{n}: {line.strip()}" for n, line in enumerate(text.split("\n"), 1)
              if re.search(r"\b20\d\d-\d\d-\d\d\b|\bissue \d+|\bSPEC\b", line)]
  assert not problems, "dates, issue numbers or SPEC in the README:\n" + "\n".join(problems)


def test_docs_cite_the_paper_not_private_notes():
  pages = [README] + [p for p in doc_files() if os.path.dirname(p) == DOCS
                      or os.path.basename(p) == "README.md"]
  hits = [f"{rel(p)}:{n}" for p in pages for n, line in enumerate(read(p).split("\n"), 1)
          if "SPEC" in line]
  assert not hits, "cite the paper's sections instead of SPEC: " + ", ".join(hits)


# ---------------------------------------------------------------------------- commands


def logical_lines(block: List[Tuple[int, str]]) -> Iterator[Tuple[int, str]]:
  """Lines of a shell block with `\\` continuations joined and `for` loops unrolled."""
  joined, start, acc = [], None, ""
  for n, line in block:
    start = n if start is None else start
    if line.rstrip().endswith("\\"):
      acc += line.rstrip()[:-1] + " "
      continue
    joined.append((start, acc + line))
    start, acc = None, ""
  if acc:
    joined.append((start, acc))
  loop: Optional[Tuple[str, List[str], List[Tuple[int, str]]]] = None
  for n, line in joined:
    one = re.match(r"^\s*for (\w+) in ([^;]*);\s*do\s+(.*?);?\s*done\s*$", line)
    head = re.match(r"^\s*for (\w+) in ([^;]*);\s*do\s*$", line)
    if one:
      yield from unroll(one.group(1), one.group(2).split(), [(n, one.group(3))])
    elif head:
      loop = (head.group(1), head.group(2).split(), [])
    elif loop is not None and re.match(r"^\s*done\s*$", line):
      yield from unroll(*loop)
      loop = None
    elif loop is not None:
      loop[2].append((n, line))
    else:
      yield n, line


def unroll(var: str, values: List[str], body: List[Tuple[int, str]]):
  for value in values:
    for n, line in body:
      yield n, re.sub(r"\$\{?%s\}?(?!\w)" % var, value, line)


def commands(line: str) -> Iterator[List[str]]:
  """The simple commands of one shell line, environment assignments dropped."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
  lexer.whitespace_split = True
  try:
    tokens = list(lexer)
  except ValueError:  # unbalanced quotes: not a command this test can read
    return
  cmd: List[str] = []
  for tok in tokens + [";"]:
    if tok and set(tok) <= set(";&|"):
      while cmd and re.match(r"^[A-Za-z_]\w*=", cmd[0]):
        cmd = cmd[1:]
      if cmd:
        yield cmd
      cmd = []
    else:
      cmd.append(tok)


def module_source(module: str) -> Optional[str]:
  spec = importlib.util.find_spec(module)
  return read(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


@functools.lru_cache(maxsize=None)
def absl_flags() -> Set[str]:
  from absl import app, flags, logging  # noqa: F401  (importing them defines their flags)
  names = set(ABSL_HELP_FLAGS)
  for module, defined in flags.FLAGS.flags_by_module_dict().items():
    if module.startswith("absl"):
      names |= {f.name for f in defined} | {f.short_name for f in defined if f.short_name}
  return names


@functools.lru_cache(maxsize=None)
def module_flags(module: str) -> Optional[Tuple[Dict[str, str], bool]]:
  """({flag: DEFINE kind}, takes a config file) of an absl entry point; None if not absl."""
  source = module_source(module)
  if (source is None or "from absl import" not in source
      or not ("app.run" in source or "cli.run(" in source)):
    return None
  defined = {name: kind for kind, name in FLAG_DEF.findall(source)}
  return defined, "DEFINE_config_file" in source


@functools.lru_cache(maxsize=None)
def config_of(path: str, preset: Optional[str]):
  spec = importlib.util.spec_from_file_location(
      "docs_config_" + re.sub(r"\W", "_", path), os.path.join(ROOT, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(preset) if preset else mod.get_config()


def has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return False
    node = node[part]
  return True


def flag_name(arg: str) -> str:
  return arg[2:].split("=", 1)[0]


def check_absl(module: str, args: List[str], where: str) -> List[str]:
  defined, takes_config = module_flags(module)
  known = set(defined) | absl_flags()
  problems = []
  config = None
  config_arg = next((a for a in args if a.startswith("--config=")), None)
  if takes_config:
    path, _, preset = (config_arg.split("=", 1)[1] if config_arg else DEFAULT_CONFIG).partition(":")
    if not os.path.isfile(os.path.join(ROOT, path)):
      return [f"{where}: --config={path}: no such config file"]
    try:
      config = config_of(path, preset or None)
    except Exception as e:  # noqa: BLE001  (an unknown preset, a broken file)
      return [f"{where}: --config={path}:{preset}: {type(e).__name__}: {e}"]
  for arg in args:
    if not arg.startswith("--") or arg == "--":
      continue
    name = flag_name(arg)
    value = arg.split("=", 1)[1] if "=" in arg else ""
    if takes_config and name.startswith("config."):
      if not has_field(config, name[len("config."):]):
        problems.append(f"{where}: {arg.split('=')[0]}: no such config field")
      continue
    if name in known:
      # --sweep=FIELD=V1;V2 (the run's config), --overrides=FIELD=V (benchmark: every method)
      target = {"sweep": config, "overrides": config_of(DEFAULT_CONFIG, "quick")}.get(name)
      field = value.split("=", 1)[0]
      if target is not None and "=" in value and not has_field(target, field):
        problems.append(f"{where}: --{name}={field}=...: no such config field")
      continue
    if name.startswith("no") and defined.get(name[2:]) in ("bool", "boolean"):
      continue
    problems.append(f"{where}: --{name} is not a flag of {module}")
  return problems


def check_launcher(script: str, args: List[str], where: str) -> List[str]:
  path = os.path.join(ROOT, script)
  if not os.path.isfile(path):
    return [f"{where}: {script}: no such script"]
  known = set(ARGPARSE_DEF.findall(read(path))) | {"--help"}
  if "add_argument" not in read(path):
    known |= {"--" + n for _, n in FLAG_DEF.findall(read(path))}
  groups, group = [], []
  for arg in args:
    if arg == "--":
      groups.append(group)
      group = []
    else:
      group.append(arg)
  groups.append(group)
  own, train_groups = groups[0], groups[1:]
  problems = [f"{where}: {a.split('=')[0]} is not a flag of {script}" for a in own
              if a.startswith("--") and a.split("=")[0] not in known]
  for g in train_groups:  # each `-- ARGS` group goes to python -m experiments.train
    problems += check_absl("experiments.train", g, where + f" (after --, {script})")
  return problems


def check_command(cmd: List[str], where: str) -> List[str]:
  if len(cmd) < 2 or not re.fullmatch(r"python3?", cmd[0]):
    return []  # pip, pytest, bash .ci/run, jupyter, ...: not ours to check
  if cmd[1] == "-m" and len(cmd) > 2:
    module = cmd[2]
    try:
      found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
      found = False
    if not found:
      return [f"{where}: python -m {module}: no such module"]
    if module_flags(module) is None:
      return []
    return check_absl(module, cmd[3:], where)
  if cmd[1].startswith("launch/") and cmd[1].endswith(".py"):
    return check_launcher(cmd[1], cmd[2:], where)
  return []


def documented_commands() -> Iterator[Tuple[str, List[str]]]:
  for path in doc_files():
    for block in code_blocks(path):
      for n, line in logical_lines(block):
        for cmd in commands(line):
          yield f"{rel(path)}:{n}", cmd


def test_documented_commands_use_real_modules_and_flags():
  checked, problems = 0, []
  for where, cmd in documented_commands():
    found = check_command(cmd, where)
    checked += bool(re.fullmatch(r"python3?", cmd[0]))
    problems += found
  assert checked >= 20, f"only {checked} python commands found in the docs' code blocks"
  assert not problems, "commands that would fail:\n" + "\n".join(problems)


def test_the_command_checker_catches_mistakes():
  """A wrong flag, config field, module or launcher flag is reported; right ones are not."""
  assert not check_command(["python", "-m", "experiments.train", "--seeds=0,1",
                            "--config=experiments/configs/mvp.py:quick",
                            "--config.agent.velocity_time=t", "--nooverwrite"], "ok")
  assert not check_command(["python", "-m", "experiments.report", "runs", "--out=x",
                            "--paired", "--verbosity=1"], "ok")
  assert check_command(["python", "-m", "experiments.train", "--no_such_flag"], "x")
  assert check_command(["python", "-m", "experiments.train", "--config.agent.no_field=1"], "x")
  assert check_command(["python", "-m", "experiments.train",
                        "--config=experiments/configs/dfp.py:quick",
                        "--config.agent.velocity_time=t"], "x")  # an MVP field, not DFP's
  assert check_command(["python", "-m", "experiments.train", "--sweep=agent.nope=1;2"], "x")
  assert check_command(["python", "-m", "experiments.no_such_module"], "x")
  assert not check_command(["pytest", "-m", "not slow", "--whatever"], "ok")  # not ours
  assert not check_command(["bash", ".ci/run"], "ok")
  assert check_command(["python", "launch/local.py", "--nodes=2"], "x")
  assert check_command(["python", "launch/local.py", "--", "--bad_train_flag"], "x")
  assert not check_command(["python", "launch/local.py", "--dry-run", "--", "--seeds=0"], "ok")
  loop = [(1, "for m in dfp mvp; do"), (2, "  python -m x --config=c/$m.py"), (3, "done")]
  assert [l for _, l in logical_lines(loop)] == ["  python -m x --config=c/dfp.py",
                                                 "  python -m x --config=c/mvp.py"]
  assert list(commands("A=1 python -m a --s='x;y' && pytest -q  # note")) == [
      ["python", "-m", "a", "--s=x;y"], ["pytest", "-q"]]
