"""Build the shipped `zoo` task suite from the held-out files of the built-in corpus.

    python -m evopress.tasks.build            # rewrite src/evopress/tasks/zoo/ in place
    python -m evopress.tasks.build OUT_DIR    # or write it elsewhere (tests compare the bytes)

Two lm-eval tasks for models trained on Python source (the zoo models), with no download:

- `zoo_completion` (multiple choice, `acc` / `acc_norm`): a few lines of a held-out file and the
  first third of the next line; pick that line's true rest among four, the three others being the
  rests of lines from *other* held-out files, cut the same way. This is line-level code completion
  (CodeXGLUE, Lu et al. 2021, arXiv 2102.04664) scored as lm-eval scores HellaSwag and PIQA: the
  log-likelihood of each ending after the context, `acc_norm` dividing by the ending's bytes.
- `zoo_rolling` (`loglikelihood_rolling`: byte perplexity, bits per byte): held-out snippets of
  about 230 tokens, scored like lm-eval's wikitext task. Not word perplexity: code has few
  whitespace-separated words, so per "word" it came out in the millions and said nothing.

Why the rest of a line and not a whole next line: with whole next lines (distractors from other
files, 8 lines of context) the dense tiny model scored 0.30 acc and 0.31 acc_norm against 0.25
chance, and 0.27-0.30 once the distractors had the true line's length: a whole line's
log-likelihood is mostly its own typicality, which the context barely moves. The rest of a line
must fit the names, brackets and operators of its own beginning, which even the tiny model reads:
0.400 ± 0.025 acc and 0.450 ± 0.025 acc_norm (lm-eval 0.4.13). A shorter context (6 lines, 320
characters) ran a little faster but scored 0.343 and 0.412, so the context stays at 8 lines.

Only held-out files are used (`evopress.data.corpus_files("heldout")`, the split the zoo models
were trained against), so no item comes from a file a zoo model saw. Every choice is drawn from a
`random.Random(SEED)` walk over files sorted by name, so the output depends only on the held-out
files' bytes: the same Python release gives byte-identical files (MANIFEST.json records the
release and a sha256 of every source file; tests rebuild the suite and compare).
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import sys
from pathlib import Path

from evopress.data import corpus_files
from evopress.data.files import read_text

SEED = 0
COMPLETION_ITEMS = 400  # stderr of acc about 0.025
ROLLING_ITEMS = 100
CONTEXT_LINES = 8  # whole lines before the cut one, cut further to CONTEXT_CHARS
CONTEXT_CHARS = 450  # with a 100-character line, context + ending stay near the tiny model's 256 positions
LINE_CHARS = (10, 100)  # a cut line's length without its indentation: no trivial `)` or `else:`
CUT_AT = 1 / 3  # where a line is cut, as a fraction of its text after the indentation
MIN_REST = 6  # characters an ending has at least
SNIPPET_CHARS = 700  # about 230 tokens of the tiny tokenizer: one rolling window of its 256
DISTRACTORS = 3
# The build configuration of the interpreter: generated per machine, not source anyone wrote.
SKIP_PREFIXES = ("stdlib/_sysconfigdata",)

SUITE_DIR = Path(__file__).with_name("zoo")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def heldout_files() -> list[tuple[str, list[str], str]]:
    """(key, lines, sha256 of the file) of every readable held-out corpus file, sorted by key.

    Lines lose trailing spaces (and a Windows line end), which no choice should hinge on."""
    out = []
    for f in sorted(corpus_files("heldout"), key=lambda f: f.key):
        text = read_text(f.path)
        if text is None or not text.strip() or f.key.startswith(SKIP_PREFIXES):
            continue
        out.append((f.key, [line.rstrip() for line in text.split("\n")], sha256(f.path.read_bytes())))
    return out


def cut(line: str) -> int | None:
    """Where to cut `line`: the space nearest CUT_AT of its text, so the ending starts with a space
    (a token boundary for byte-level BPE); None if the line is not one to cut."""
    start = len(line) - len(line.lstrip())
    body = line[start:]
    if not (LINE_CHARS[0] <= len(body) and len(line) <= LINE_CHARS[1] and any(c.isalnum() for c in body)):
        return None
    spaces = [j for j in range(start + 1, len(line) - MIN_REST + 1) if line[j] == " " and line[j - 1] != " "]
    target = start + CUT_AT * len(body)
    return min(spaces, key=lambda j: (abs(j - target), j)) if spaces else None


def context_before(lines: list[str], i: int) -> str | None:
    """The lines before line `i` (at most CONTEXT_LINES and CONTEXT_CHARS), or None if too thin."""
    ctx = lines[max(0, i - CONTEXT_LINES):i]
    while ctx and (not ctx[0].strip() or len("\n".join(ctx)) > CONTEXT_CHARS):
        ctx = ctx[1:]
    if sum(1 for line in ctx if line.strip()) < 3:
        return None
    return "\n".join(ctx) + "\n"


def round_robin(per_file: list[list], count: int) -> list:
    """Up to `count` entries, one from each file in turn, so no single file dominates a task."""
    queues = [list(q) for q in per_file]
    out = []
    while len(out) < count and any(queues):
        for q in queues:
            if q and len(out) < count:
                out.append(q.pop(0))
    return out


def endings(lines: list[str]) -> list[str]:
    return [line[j:] for line in lines if (j := cut(line)) is not None]


def completion_items(files, rng: random.Random) -> list[dict]:
    """The multiple-choice items: context and a line's beginning; its true rest among three others."""
    positions = []
    for f, (_, lines, _) in enumerate(files):
        ok = [i for i in range(len(lines)) if cut(lines[i]) is not None and context_before(lines, i) is not None]
        rng.shuffle(ok)
        positions.append([(f, i) for i in ok])
    pool = [endings(lines) for _, lines, _ in files]
    items = []
    for n, (f, i) in enumerate(round_robin(positions, COMPLETION_ITEMS)):
        key, lines, _ = files[f]
        j = cut(lines[i])
        choices = distractors(pool, f, lines, rng)
        label = rng.randrange(DISTRACTORS + 1)
        choices.insert(label, lines[i][j:])
        items.append({"id": f"zoo_completion-{n:04d}", "source": key, "line": i + 1,
                      "context": context_before(lines, i) + lines[i][:j], "choices": choices, "label": label})
    return items


def distractors(pool: list[list[str]], f: int, lines: list[str], rng: random.Random) -> list[str]:
    """Endings from other files that end no line of file `f` (so none is secretly right), all different."""
    chosen: list[str] = []
    while len(chosen) < DISTRACTORS:
        g = rng.randrange(len(pool))
        if g == f or not pool[g]:
            continue
        rest = rng.choice(pool[g])
        if rest not in chosen and not any(line.endswith(rest) for line in lines):
            chosen.append(rest)
    return chosen


def rolling_items(files, rng: random.Random) -> list[dict]:
    """Snippets of whole lines, at most SNIPPET_CHARS each (unless one line is longer), from each file in turn."""
    per_file = []
    for key, lines, _ in files:
        chunks, start, size = [], 0, 0
        for i, line in enumerate([*lines, None]):
            if line is None or (size + len(line) + 1 > SNIPPET_CHARS and i > start):
                body = lines[start:i]
                lead = next((k for k, text in enumerate(body) if text), len(body))  # blank lines open no snippet
                text = "\n".join(body[lead:]).rstrip("\n")
                if len(text.replace(" ", "")) >= SNIPPET_CHARS // 4:  # not mostly blank
                    chunks.append((key, start + lead + 1, text + "\n"))
                start, size = i, 0
            if line is not None:
                size += len(line) + 1
        rng.shuffle(chunks)
        per_file.append(chunks)
    return [{"id": f"zoo_rolling-{n:04d}", "source": key, "line": line, "text": text}
            for n, (key, line, text) in enumerate(round_robin(per_file, ROLLING_ITEMS))]


# lm-eval task configs. `data_files` is relative to this folder: evopress resolves it when it runs
# the suite (plain `lm_eval --include_path` would resolve it against the working directory).
# `doc_to_text: context` names a column, so code with `{{` in it never goes through Jinja.
COMPLETION_YAML = """\
# Pick the true rest of a held-out Python line among four (written by python -m evopress.tasks.build).
task: zoo_completion
dataset_path: json
dataset_kwargs:
  data_files:
    test: zoo_completion.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

ROLLING_YAML = """\
# Rolling log-likelihood of held-out Python snippets, as lm-eval's wikitext (written by python -m evopress.tasks.build).
task: zoo_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: zoo_rolling.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


def jsonl(items: list[dict]) -> bytes:
    return "".join(json.dumps(item, ensure_ascii=True) + "\n" for item in items).encode()


def suite_files() -> dict[str, bytes]:
    """Every file of the suite, by name, as bytes; the same bytes for the same held-out files."""
    files = heldout_files()
    rng = random.Random(SEED)
    completion, rolling = completion_items(files, rng), rolling_items(files, rng)
    used = {item["source"] for item in completion + rolling}
    manifest = {
        "built_by": "python -m evopress.tasks.build",
        "python": platform.python_version(),
        "corpus": "builtin, heldout split (evopress.data.corpus_files('heldout'))",
        "seed": SEED,
        "tasks": {"zoo_completion": len(completion), "zoo_rolling": len(rolling)},
        # the bytes the items came from: a rebuild from other bytes cannot give the same files
        "sources": {key: digest for key, _, digest in files if key in used},
    }
    return {
        "zoo_completion.yaml": COMPLETION_YAML.encode(),
        "zoo_completion.jsonl": jsonl(completion),
        "zoo_rolling.yaml": ROLLING_YAML.encode(),
        "zoo_rolling.jsonl": jsonl(rolling),
        "MANIFEST.json": (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode(),
    }


def write_suite(out_dir: Path = SUITE_DIR) -> dict[str, Path]:
    """Write the suite's files into `out_dir`; {name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in suite_files().items():
        (out_dir / name).write_bytes(data)
        paths[name] = out_dir / name
    return paths


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else SUITE_DIR
    for path in write_suite(out).values():
        print(f"{path}  {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
