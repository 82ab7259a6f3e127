"""docs/derivations.md stays true and renders: its code references resolve, its quotes are in the code, its math is balanced.

The page's convention (stated in its introduction): a code reference is a file and a symbol in
backticks, `` `src/<path>.py` `Symbol` `` with ``Symbol`` a ``function``, ``Class`` or
``Class.method``.  A colon and one backticked line after it quote that line verbatim from the
symbol's source; a reference that ends its line with a colon, followed by a ``python`` block,
quotes every line of the block.  A ``python`` block that follows no reference is a snippet to run.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "derivations.md"

FENCE = re.compile(r"^\s*```(\w*)\s*$")
REF = re.compile(r"`(src/[\w/]+\.py)`\s+`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)`")
INLINE_QUOTE = re.compile(r":\s*`([^`\n]+)`")  # right after a reference
BLOCK_QUOTE = re.compile(r":[ \t]*\n?\s*$")  # a reference that ends its prose with a colon: the next block quotes
CODE_SPAN = re.compile(r"`[^`\n]*`")


@dataclass(frozen=True)
class Segment:
    kind: str  # "prose" or "fence"
    lang: str  # the fence's language ("" for prose)
    text: str  # the prose, or the fence's body
    line: int  # 1-based line where it starts (a fence: its opening line)
    closed: bool = True  # a fence closed before the end of the file


@dataclass(frozen=True)
class CodeRef:
    path: str  # src/hand/functional.py
    symbol: str  # Sigmoid.derivative
    quotes: tuple[str, ...]  # lines quoted verbatim from the symbol's source
    line: int  # where the reference is in the page


def segments(text: str) -> list[Segment]:
    """The page cut into prose and fenced blocks (a fence opens with ```lang and closes with a bare ```)."""
    out: list[Segment] = []
    prose: list[str] = []
    prose_start = 1
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            prose.append(lines[i])
            i += 1
            continue
        out.append(Segment("prose", "", "\n".join(prose), prose_start))
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        out.append(Segment("fence", opening.group(1), "\n".join(body), start, closed=i < len(lines)))
        i += 1
        prose, prose_start = [], i + 1
    out.append(Segment("prose", "", "\n".join(prose), prose_start))
    return out


def parse_code_refs(text: str) -> list[CodeRef]:
    """Every code reference of the page, with the lines it quotes (see the module docstring)."""
    segs = segments(text)
    refs = []
    for n, seg in enumerate(segs):
        if seg.kind != "prose":
            continue
        for m in REF.finditer(seg.text):
            line = seg.line + seg.text.count("\n", 0, m.start())
            rest = seg.text[m.end():]
            quotes: tuple[str, ...] = ()
            inline = INLINE_QUOTE.match(rest)
            if inline:
                quotes = (inline.group(1),)
            elif BLOCK_QUOTE.match(rest) and n + 1 < len(segs) and segs[n + 1].lang == "python":
                quotes = tuple(ln.strip() for ln in segs[n + 1].text.splitlines() if ln.strip())
            refs.append(CodeRef(m.group(1), m.group(2), quotes, line))
    return refs


def quoted_blocks(text: str) -> set[int]:
    """Start lines of the python blocks that quote code (the ones right after a reference ending in a colon)."""
    segs = segments(text)
    starts = set()
    for n, seg in enumerate(segs[:-1]):
        if seg.kind == "prose" and segs[n + 1].lang == "python":
            last = list(REF.finditer(seg.text))
            if last and BLOCK_QUOTE.match(seg.text[last[-1].end():]):
                starts.add(segs[n + 1].line)
    return starts


def problems(ref: CodeRef) -> list[str]:
    """What is wrong with one reference: a module that does not import, a missing symbol, a quote not in its source."""
    where = f"docs/derivations.md:{ref.line}: `{ref.path}` `{ref.symbol}`"
    module_name = ref.path.removesuffix(".py").replace("/", ".")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        return [f"{where}: module {module_name} does not import ({exc})"]
    for part in ref.symbol.split("."):
        if not hasattr(obj, part):
            return [f"{where}: {part!r} is missing (no such symbol in {module_name})"]
        obj = getattr(obj, part)
    source = inspect.getsource(obj)
    return [f"{where}: the quoted line {q!r} is not in the source of {ref.symbol}" for q in ref.quotes if q not in source]


def prose_without_code(text: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of every prose line, with code spans removed (math lives outside code)."""
    out = []
    for seg in segments(text):
        if seg.kind == "prose":
            for k, line in enumerate(seg.text.splitlines()):
                out.append((seg.line + k, CODE_SPAN.sub("", line)))
    return out


def math_problems(text: str) -> list[str]:
    """Rendering pitfalls: an unclosed fence, unpaired ``$$`` or ``$``, ``_`` or ``*`` inside inline ``$…$``."""
    found = [f"line {s.line}: the ```{s.lang} fence is never closed" for s in segments(text) if not s.closed]
    lines = prose_without_code(text)
    if sum(line.count("$$") for _, line in lines) % 2:
        found.append("the $$ delimiters are not paired")
    for number, line in lines:
        inline = re.sub(r"\$\$.*?\$\$", "", line).replace("$$", "")
        if inline.count("$") % 2:
            found.append(f"line {number}: an unpaired $ ({line.strip()!r})")
        for m in re.finditer(r"\$([^$]+)\$", inline):
            if "_" in m.group(1) or "*" in m.group(1):
                found.append(f"line {number}: inline math ${m.group(1)}$ has _ or * (Markdown eats them: use a display block)")
    return found


def _anchors(doc: str) -> set[str]:
    """The GitHub anchors of the page's headings (lower case, punctuation dropped, spaces as hyphens)."""
    anchors = set()
    for seg in segments(doc):
        if seg.kind == "prose":
            for line in seg.text.splitlines():
                if line.startswith("#"):
                    title = CODE_SPAN.sub(lambda m: m.group(0)[1:-1], line.lstrip("#").strip())
                    anchors.add(re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-"))
    return anchors


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


# ---------------------------------------------------------------- the code references


def test_every_code_reference_resolves_and_every_quote_is_in_the_code(doc):
    refs = parse_code_refs(doc)
    assert len(refs) >= 35, f"only {len(refs)} code references parsed: the convention or the parser broke"
    assert sum(len(r.quotes) for r in refs) >= 40, "the quotes are no longer parsed"
    found = [p for ref in refs for p in problems(ref)]
    assert not found, "\n".join(found)


def test_every_file_of_the_math_is_referenced(doc):
    files = {r.path for r in parse_code_refs(doc)}
    for name in ("functional", "losses", "dropout", "optim", "backprop", "fused", "nets", "checks"):
        assert f"src/hand/{name}.py" in files


def test_every_hand_written_backward_and_optimizer_is_derived(doc):
    """A Function or optimizer added to the math package without a derivation on the page fails here."""
    named = {(r.path, r.symbol.split(".")[0]) for r in parse_code_refs(doc)}
    expected = set()
    for name in ("functional", "losses", "dropout", "fused"):
        module = importlib.import_module(f"src.hand.{name}")
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, torch.autograd.Function) and obj.__module__ == module.__name__:
                expected.add((f"src/hand/{name}.py", attr))
    optim = importlib.import_module("src.hand.optim")
    expected |= {("src/hand/optim.py", cls.__name__) for cls in optim.OPTIMIZERS.values()}
    expected |= {("src/hand/optim.py", "max_norm_"), ("src/hand/backprop.py", "backward_pass")}
    assert ("src/hand/functional.py", "Sigmoid") in expected  # the scan itself found the Functions
    missing = sorted(expected - named)
    assert not missing, f"no derivation names these: {missing}"


def test_the_parser_reports_a_made_up_symbol_module_or_quote():
    """Negative control: the same functions that pass the page fail on references that lie."""
    sample = (
        "In code, `src/hand/functional.py` `Sigmoid.no_such_rule`: `grad * (1 - y) * y`, and\n"
        "`src/hand/no_such_file.py` `Thing`, and `src/hand/functional.py` `Tanh.derivative`: `grad * (1 + y * y)`;\n"
        "the affine layer, `src/hand/functional.py` `Linear.backward`:\n"
        "\n"
        "```python\n"
        "grad_x = grad.mm(weight)  # (batch, in)\n"
        "grad_w = grad.mm(x)  # a transposed product\n"
        "```\n"
        "and a fine one, `src/hand/functional.py` `Sigmoid.derivative`: `grad * (1 - y) * y`.\n"
    )
    refs = parse_code_refs(sample)
    assert [(r.path, r.symbol) for r in refs] == [
        ("src/hand/functional.py", "Sigmoid.no_such_rule"),
        ("src/hand/no_such_file.py", "Thing"),
        ("src/hand/functional.py", "Tanh.derivative"),
        ("src/hand/functional.py", "Linear.backward"),
        ("src/hand/functional.py", "Sigmoid.derivative"),
    ]
    assert refs[3].quotes == ("grad_x = grad.mm(weight)  # (batch, in)", "grad_w = grad.mm(x)  # a transposed product")
    missing, no_module, wrong_quote, wrong_block, fine = (problems(r) for r in refs)
    assert len(missing) == 1 and "'no_such_rule' is missing" in missing[0]
    assert len(no_module) == 1 and "does not import" in no_module[0]
    assert len(wrong_quote) == 1 and "grad * (1 + y * y)" in wrong_quote[0]
    assert len(wrong_block) == 1 and "grad.mm(x)" in wrong_block[0]  # the right line of the block passes
    assert fine == []


# ---------------------------------------------------------------- the math renders


def test_the_math_is_balanced_and_inline_math_has_no_underscore_or_asterisk(doc):
    assert not math_problems(doc), "\n".join(math_problems(doc))
    blocks = [s for s in segments(doc) if s.lang == "math"]
    assert len(blocks) >= 30, "the derivations are written in display math blocks"
    assert all(s.text.strip() for s in blocks), "an empty math block"


def test_display_math_is_plain_latex(doc):
    """Inside a math block, LaTeX commands, not Unicode look-alikes (−, ᵀ, ⊙, ℒ), which MathJax may render as text."""
    bad = [
        f"line {s.line + 1 + k}: {ch!r} in {line.strip()!r}"
        for s in segments(doc)
        if s.lang == "math"
        for k, line in enumerate(s.text.splitlines())
        for ch in line
        if not ch.isascii()
    ]
    assert not bad, "\n".join(bad)


def test_the_math_checker_catches_each_pitfall():
    """Negative control: each rendering pitfall in a made-up page is reported."""
    assert math_problems("```math\nx = y\n```\n$$a = b$$\ntext $x$ and `code $_*$`\n") == []
    assert math_problems("```math\nx = y\n") == ["line 1: the ```math fence is never closed"]
    assert math_problems("$$\na = b\n") == ["the $$ delimiters are not paired"]
    assert math_problems("cost $x$ and $5\n") == ["line 1: an unpaired $ ('cost $x$ and $5')"]
    (eaten,) = math_problems("the weight $W_l$ of layer l\n")
    assert "$W_l$ has _ or *" in eaten
    (star,) = math_problems("the gradient $g*y$\n")
    assert "$g*y$" in star


# ---------------------------------------------------------------- the page's other promises


def test_the_worked_example_snippet_runs_and_its_numbers_hold(doc):
    """The python block that quotes no code is the worked example's check: it asserts the page's numbers."""
    quoting = quoted_blocks(doc)
    snippets = [s for s in segments(doc) if s.lang == "python" and s.line not in quoting]
    assert len(snippets) == 1, [s.line for s in snippets]
    assert "assert_close" in snippets[0].text
    exec(compile(snippets[0].text, f"{DOC}:{snippets[0].line}", "exec"), {"__name__": "derivations_snippet"})


def test_internal_links_point_at_headings(doc):
    """Every ``(#anchor)`` link matches a heading's GitHub anchor."""
    anchors = _anchors(doc)
    links = re.findall(r"\]\(#([^)]+)\)", doc)
    assert len(links) >= 20
    assert not [a for a in links if a not in anchors], sorted(set(links) - anchors)


def test_links_into_this_page_from_the_rest_of_the_repository_resolve(doc):
    """The exercises, the walkthrough, the README and the other docs link sections here: renaming a heading fails here."""
    anchors = _anchors(doc)
    places = [ROOT / "README.md", *(ROOT / d for d in ("docs", "exercises", "src"))]
    files = [p for place in places for p in ([place] if place.is_file() else place.rglob("*")) if p.suffix in (".md", ".py")]
    broken = [
        f"{f.relative_to(ROOT)}: #{anchor}"
        for f in files
        for anchor in re.findall(r"derivations\.md#([\w-]+)", f.read_text(encoding="utf-8"))
        if anchor not in anchors
    ]
    assert not broken, broken
    assert "the-whole-net" in anchors and "sigmoid" in anchors  # the scan itself works


def test_the_graph_markers_and_the_pointers_to_the_other_pages(doc):
    section = doc.split("## One step as a graph", 1)[1].split("\n## ", 1)[0]
    begin, end = section.find("<!-- graph: begin -->"), section.find("<!-- graph: end -->")
    assert 0 <= begin < end, "the lead embeds the walkthrough's graph between these two markers"
    norm = doc.split("## Batch and layer normalization", 1)[1].split("\n## ", 1)[0]
    assert "(batchnorm.md)" in norm
    for target in ("(walkthrough.md)", "(../exercises/README.md)", "(verify.md)"):
        assert target in doc
    for command in ("python -m src.verify", "python -m src.walkthrough"):
        assert command in doc
