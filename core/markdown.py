"""Markdown tables from DataFrames, without the optional ``tabulate`` dependency."""
import pandas as pd


def markdown_table(df: pd.DataFrame) -> str:
    """GitHub-flavoured table: header row, separator, one line per row (values as ``str``)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])
