"""A report built over many steps: a python-docx ``Document`` that lives in the kernel.

The "stateful client object" style: ``new_document`` returns a real ``Document``; the model keeps
it in a variable, adds headings, text, tables and figures in later blocks, and saves it into the
workspace, where the user finds the file.
"""

from __future__ import annotations

import io
from typing import Any

from kernel_bridge.tools.base import Tool, ToolError


def _docx() -> Any:
    try:
        import docx
    except ModuleNotFoundError:
        raise ToolError(
            'the documents tools need python-docx: pip install "kernel-bridge[tools]"'
        ) from None
    return docx


class NewDocument(Tool):
    name = "new_document"
    description = (
        "A new Word document (a python-docx Document) whose first line is `title` as a heading. "
        "Keep it in a variable and build it over later blocks: doc.add_heading(text, level=1), "
        "doc.add_paragraph(text), add_table(doc, df), add_figure(doc, fig); then "
        "doc.save('report.docx') writes it into the working directory."
    )
    inputs = {"title": {"type": "string", "description": "The document's title."}}  # noqa: RUF012
    output_type = "object"
    returns = "docx.document.Document"

    def forward(self, title: str) -> Any:
        document = _docx().Document()
        document.add_heading(str(title), level=0)
        return document


class AddTable(Tool):
    name = "add_table"
    description = (
        "Append a pandas DataFrame to a document as a table (the index as the first column), "
        "numbers rounded to `decimals`. Returns the python-docx table."
    )
    inputs = {  # noqa: RUF012
        "document": {"type": "object", "description": "A Document from new_document."},
        "frame": {"type": "object", "description": "The pandas DataFrame to add."},
        "decimals": {"type": "integer", "description": "Decimals shown.", "nullable": True},
    }
    output_type = "object"

    def forward(self, document: Any, frame: Any, decimals: int = 2) -> Any:
        if not hasattr(frame, "columns") or not hasattr(frame, "itertuples"):
            raise ToolError(f"add_table needs a pandas DataFrame, got {type(frame).__name__}")
        index_name = str(frame.index.name or "")
        table = document.add_table(rows=1, cols=len(frame.columns) + 1)
        table.style = "Table Grid"
        header = table.rows[0].cells
        header[0].text = index_name
        for cell, column in zip(header[1:], frame.columns, strict=True):
            cell.text = str(column)
        for row in frame.itertuples():
            cells = table.add_row().cells
            for cell, value in zip(cells, row, strict=True):
                cell.text = _format(value, decimals)
        return table


class AddFigure(Tool):
    name = "add_figure"
    description = (
        "Append a matplotlib figure to a document as a picture `width_inches` wide. Returns None."
    )
    inputs = {  # noqa: RUF012
        "document": {"type": "object", "description": "A Document from new_document."},
        "figure": {"type": "object", "description": "A matplotlib Figure (e.g. plt.gcf())."},
        "width_inches": {"type": "number", "description": "Picture width.", "nullable": True},
    }
    output_type = "null"

    def forward(self, document: Any, figure: Any, width_inches: float = 6.0) -> None:
        if not hasattr(figure, "savefig"):
            raise ToolError(f"add_figure needs a matplotlib Figure, got {type(figure).__name__}")
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=120, bbox_inches="tight")
        png.seek(0)
        document.add_picture(png, width=_docx().shared.Inches(float(width_inches)))


def _format(value: Any, decimals: int) -> str:
    if isinstance(value, float):
        return f"{value:,.{decimals}f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d")
    return str(value)


def document_tools() -> list[Tool]:
    return [NewDocument(), AddTable(), AddFigure()]
