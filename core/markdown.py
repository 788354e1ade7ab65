"""Markdown: tables from DataFrames (without the optional ``tabulate`` dependency) and generated blocks in docs."""
from pathlib import Path

import pandas as pd

from core.atomic import atomic_write_text


def markdown_table(df: pd.DataFrame) -> str:
    """GitHub-flavoured table: header row, separator, one line per row (values as ``str``)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def replace_block(doc: Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- benchmarks.run:<name> start -->`` and ``... end -->`` in ``doc`` with
    ``body`` (appended with its markers when absent; the file is created if missing), atomically."""
    doc = Path(doc)
    start, end = f"<!-- benchmarks.run:{name} start -->", f"<!-- benchmarks.run:{name} end -->"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text and text.index(start) < text.index(end):
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(doc, text)
