"""The notebooks run top to bottom on ../shared/data with a tiny model, and are committed without outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

FIGURES = {"01_explore_scene": 4, "02_land_cover_from_polygons": 2, "03_canopy_height": 2}
MAPS = {"01_explore_scene": 1, "02_land_cover_from_polygons": 0, "03_canopy_height": 0}  # interactive (folium) maps
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there_without_outputs() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_explore_scene.ipynb", "02_land_cover_from_polygons.ipynb", "03_canopy_height.ipynb"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs: clear them"


def test_the_notebooks_use_only_the_top_level_api() -> None:
    for path in NOTEBOOKS:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "import geodino" in code, path.name
        assert re.findall(r"(?:from|import) geodino\.\w+|from geodino import", code) == [], path.name  # no module of geodino's


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEODINO_DATA", str(shared_data))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    figures = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) == FIGURES[path.stem]  # every map was drawn
    maps = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if "leaflet" in o.get("data", {}).get("text/html", "")]
    assert len(maps) == MAPS[path.stem]
