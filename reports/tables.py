"""The published result tables, generated from run folders (``dynamics tables DIR [DIR ...]``).

From an experiment folder written by ``dynamics run`` (its ``findings.json``, :mod:`reports.claims`,
and ``machine.json``, :mod:`dynamics.machine`) one Markdown block: the machine the numbers came from,
how trained the models are, and the table of the paper's claims (mean ± sd over seeds per optimiser,
the verdict with its footing, the margin of every seed). Further folders are the same command run
elsewhere (another CPU, other kernels, other thread counts): a second table gives each claim's
numbers and verdict in every folder and their spread, so a reader sees how far the published numbers
move between machines.

Files carry the blocks between ``<!-- results:NAME:begin -->`` and ``<!-- results:NAME:end -->`` (the
claims) and ``<!-- results:NAME-spread:begin -->`` … ``end -->`` (the spread; :func:`replace_block`);
``--write FILE`` replaces those a file has, so README and docs are regenerated from a run of the
current code instead of being edited by hand. :func:`table_signature` is the block's
format without its numbers: the tests check that the published blocks have the format this module
writes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dynamics.machine import read as read_machines
from dynamics.machine import summary as machine_summary
from reports.experiment import ReportError
from reports.runs import optimizer_title
from reports.training import training_sentence
from reports.verdicts import HAIR

ORDER = ("gn", "kgn", "sgd", "adam")
BEGIN, END = "<!-- results:{name}:begin -->", "<!-- results:{name}:end -->"


def load_findings(folder: Path) -> dict:
    """``folder/findings.json`` (written by ``dynamics run`` / ``dynamics report``); ReportError if absent."""
    path = Path(folder) / "findings.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReportError(f"{path} cannot be read ({error}); run `dynamics run` or `dynamics report "
                          f"{folder}` first") from None


def optimizers(document: dict) -> list[str]:
    """The optimisers of a findings document, GN, SGD, Adam first."""
    seen = list(dict.fromkeys(o for c in document["claims"].values() for o in c["values"]))
    return sorted(seen, key=lambda o: (ORDER.index(o) if o in ORDER else len(ORDER), seen.index(o)))


def number(summary: dict | None) -> str:
    """"mean ± sd" with 3 and 2 significant digits; "—" when not measured."""
    if not summary or summary.get("mean") is None:
        return "—"
    text = f"{summary['mean']:.3g}"
    return text + (f" ± {summary['sd']:.2g}" if summary.get("sd") is not None else "")


def verdict_cell(claim: dict) -> str:
    """The verdict in bold, with "on a hair" and "cannot discriminate" flags (:mod:`reports.verdicts`)."""
    text = f"**{claim['verdict']}**"
    if claim.get("on_a_hair"):
        text += f" (on a hair: seed {', '.join(claim['on_a_hair'])})"
    if claim.get("discriminates") is False and claim["verdict"] != "not measured":
        text += " (cannot discriminate)"
    return text


def margin_cell(claim: dict) -> str:
    """Each seed's margin in %, signed (+: criterion met)."""
    margins = [m["margin"] for m in (claim.get("margins") or {}).values() if m.get("margin") is not None]
    return ", ".join(f"{'+' if m >= 0 else '−'}{abs(m) * 100:.1f} %" for m in margins) or "—"


def claims_table(document: dict) -> list[str]:
    """The Markdown table of one findings document."""
    names = optimizers(document)
    lines = ["| claim | measured | " + " | ".join(optimizer_title(o) for o in names)
             + " | verdict | margin per seed |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for claim_id, claim in document["claims"].items():
        cells = [f"`{claim_id}`", claim["unit"], *(number(claim["values"].get(o)) for o in names),
                 verdict_cell(claim), margin_cell(claim)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine_line(folder: Path) -> str:
    machines = read_machines(folder)
    if not machines:
        return f"Machine: not recorded in {folder} (no machine.json)."
    return "Machine: " + "; then ".join(machine_summary(m) for m in machines) + "."


def why_not_lines(document: dict) -> list[str]:
    """One line per claim whose criterion cannot discriminate, saying why."""
    return [f"- `{claim_id}` cannot discriminate: {claim['why_not']}."
            for claim_id, claim in document["claims"].items()
            if claim.get("discriminates") is False and claim["verdict"] != "not measured" and claim.get("why_not")]


def spread_table(folders: list[Path], documents: list[dict]) -> list[str]:
    """Each claim's per-optimiser mean and the verdict in every folder, and the range of the means."""
    names = optimizers(documents[0])
    heads = [f"`{f.name}` ({_capability(f)})" for f in folders]
    lines = ["| claim | optimiser | " + " | ".join(heads) + " | range of the means |",
             "|---|---|" + "---|" * len(folders) + "---|"]
    for claim_id, claim in documents[0]["claims"].items():
        for o in names:
            summaries = [d["claims"].get(claim_id, {}).get("values", {}).get(o) for d in documents]
            means = [s["mean"] for s in summaries if s and s.get("mean") is not None]
            spread = f"{max(means) - min(means):.2g}" if len(means) > 1 else "—"
            lines.append(f"| `{claim_id}` | {optimizer_title(o)} | " + " | ".join(number(s) for s in summaries)
                         + f" | {spread} |")
        verdicts = [d["claims"].get(claim_id, {}).get("verdict", "—") for d in documents]
        same = "same" if len(set(verdicts)) == 1 else "**differs**"
        lines.append(f"| `{claim_id}` | verdict | " + " | ".join(verdicts) + f" | {same} |")
    return lines


def _capability(folder: Path) -> str:
    machines = read_machines(folder)
    if not machines:
        return "machine not recorded"
    m = machines[-1]
    forced = m.get("environment", {}).get("ATEN_CPU_CAPABILITY")
    kernels = f"{m.get('cpu_capability', '?')} kernels" + (f", forced by ATEN_CPU_CAPABILITY={forced}" if forced else "")
    return f"{kernels}, {m.get('threads', '?')} thread(s)"


def results_blocks(folders: list[Path], name: str) -> dict[str, str]:
    """The Markdown blocks (without markers) for ``folders``, the first being the published run and the
    others the same command elsewhere: ``name`` (machine, how trained, the claims table, the notes)
    and, with several folders, ``name-spread`` (every folder's machine and the spread table)."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise ReportError("dynamics tables needs at least one run folder")
    documents = [load_findings(f) for f in folders]
    first = documents[0]
    lines = [f"<!-- generated by `dynamics tables` from the run folder {folders[0].name}; do not edit by hand -->",
             machine_line(folders[0])]
    footing = training_sentence(first.get("training", {}))
    if footing:
        lines.append(footing)
    lines += ["", *claims_table(first), ""]
    lines.append(f"Verdicts are per seed (holds: every seed meets the criterion); a margin is the relative slack of a "
                 f"seed's closest bound (+: met), and a verdict is *on a hair* when a seed is within ±{HAIR:.0%} of "
                 f"its criterion, about the size of the changes other CPU kernels make to these numbers.")
    why = why_not_lines(first)
    if why:
        lines += ["", *why]
    blocks = {name: "\n".join(lines)}
    if len(folders) > 1:
        spread = [f"<!-- generated by `dynamics tables` from the run folders {', '.join(f.name for f in folders)}; "
                  "do not edit by hand -->", "The same command in every folder (mean ± sd over seeds):", ""]
        spread += [f"- `{f.name}`: {machine_line(f).removeprefix('Machine: ')}" for f in folders]
        spread += ["", *spread_table(folders, documents)]
        blocks[f"{name}-spread"] = "\n".join(spread)
    return blocks


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the part between the ``name`` markers replaced by ``block``; ReportError when the
    markers are missing or out of order."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ReportError(f"markers {begin} … {end} not found (in this order)")
    return text[:start + len(begin)] + "\n" + block + "\n" + text[stop:]


def extract_block(text: str, name: str) -> str | None:
    """The part between the ``name`` markers (None when absent)."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    start, stop = text.find(begin), text.find(end)
    return None if start < 0 or stop < start else text[start + len(begin):stop].strip("\n")


def table_signature(block: str) -> list[str]:
    """The block's format without its numbers: for every table row its first two cells (the claim and
    what is measured, or the claim and the optimiser) and its number of cells, header rows with folder
    names blanked, and whether the machine is named; so blocks of the same format (the same claims,
    columns and rows) have the same signature whatever their numbers and verdicts."""
    out = []
    for line in block.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                out.append(f"separator {len(cells)}")
            elif cells[0] == "claim":   # a header
                out.append(" | ".join("F" if c.startswith("`") else c for c in cells))
            else:
                out.append(f"{cells[0]} | {cells[1]} | {len(cells)} cells")
        elif line.startswith("Machine:"):
            out.append("Machine:")
    return out


def folder_count(block: str) -> int:
    """How many run folders a spread block was made from (its "- `folder`: machine" lines)."""
    return sum(1 for line in block.splitlines() if re.match(r"- `[^`]+`: ", line))


def write_blocks(files: list[Path], blocks: dict[str, str]) -> list[Path]:
    """Replace, in each of ``files``, every block of ``blocks`` whose markers it has; ReportError for a
    file that has none of them (or cannot be read)."""
    for path in files:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ReportError(f"cannot read {path}: {error}") from None
        present = [name for name in blocks if extract_block(text, name) is not None]
        if not present:
            markers = ", ".join(BEGIN.format(name=name) for name in blocks)
            raise ReportError(f"{path} has none of the markers {markers}")
        for name in present:
            text = replace_block(text, name, blocks[name])
        path.write_text(text, encoding="utf-8")
    return [Path(f) for f in files]
