"""The heatmap's risk grid: a small ESM component, one named, coloured cell per server.

Rendered as HTML (not a canvas) so names are readable, selectable and findable by a screen
reader or a browser test; the colour of each cell comes from :mod:`fleetcast.dashboard.risk`
(computed in Python, sent as data). A click sets ``selected`` (synced back to Python), which opens that server's detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import param
from panel.custom import JSComponent

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RiskGrid"]

_ESM = """
function paint(btn, cell, selected) {
  btn.className = "fc-cell" + (cell.name === selected ? " fc-selected" : "");
  btn.style.background = cell.colour;
  btn.style.color = cell.text_colour;
  btn.title = cell.tooltip;
  btn.dataset.level = cell.level;
  btn.dataset.risk = cell.risk === null ? "" : String(cell.risk);
  btn.lastChild.textContent = cell.label;
}

function build(model, el, state) {
  el.innerHTML = "";
  state.buttons = new Map();
  const root = document.createElement("div");
  root.className = "fc-grid";
  let profile = null;
  let row = null;
  for (const cell of model.cells) {
    if (cell.profile !== profile) {
      profile = cell.profile;
      const group = document.createElement("div");
      group.className = "fc-group";
      const title = document.createElement("div");
      title.className = "fc-profile";
      title.textContent = profile;
      group.appendChild(title);
      row = document.createElement("div");
      row.className = "fc-row";
      group.appendChild(row);
      root.appendChild(group);
    }
    const btn = document.createElement("button");
    btn.dataset.server = cell.name;
    const name = document.createElement("span");
    name.className = "fc-name";
    name.textContent = cell.name;
    const risk = document.createElement("span");
    risk.className = "fc-risk";
    btn.appendChild(name);
    btn.appendChild(risk);
    btn.addEventListener("click", () => { model.selected = cell.name; });
    row.appendChild(btn);
    state.buttons.set(cell.name, btn);
  }
  if (!model.cells.length) {
    const empty = document.createElement("div");
    empty.className = "fc-empty";
    empty.textContent = "No forecasts yet.";
    root.appendChild(empty);
  }
  el.appendChild(root);
  state.root = root;
  state.layout = model.cells.map(c => c.profile + "/" + c.name).join(",");
}

function draw(model, el, state) {
  // Rebuild only when the set of servers changed; otherwise repaint in place, so a hover
  // or a click in progress is not interrupted by a live update.
  const layout = model.cells.map(c => c.profile + "/" + c.name).join(",");
  if (layout !== state.layout) {
    build(model, el, state);
  }
  for (const cell of model.cells) {
    paint(state.buttons.get(cell.name), cell, model.selected);
  }
  state.root.className = "fc-grid" + (model.stale ? " fc-stale" : "");
}

export function render({ model, el }) {
  const state = {layout: null, buttons: new Map(), root: null};
  draw(model, el, state);
  model.on(["cells", "selected", "stale"], () => draw(model, el, state));
}
"""

_CSS = """
.fc-grid { display: flex; flex-direction: column; gap: 10px; font-family: system-ui, sans-serif; }
.fc-grid.fc-stale { outline: 2px dashed #d64545; outline-offset: 4px; }
.fc-profile { font-weight: 600; font-size: 13px; margin-bottom: 4px; color: #333; }
.fc-row { display: flex; flex-wrap: wrap; gap: 4px; }
.fc-cell { display: flex; flex-direction: column; align-items: center; justify-content: center;
  width: 84px; height: 46px; border: 2px solid transparent; border-radius: 4px; cursor: pointer;
  font-size: 12px; padding: 2px; }
.fc-cell:hover { border-color: #222; }
.fc-cell.fc-selected { border-color: #1a4fd6; box-shadow: 0 0 0 2px #1a4fd6; }
.fc-name { font-weight: 600; }
.fc-risk { font-size: 11px; }
.fc-empty { color: #666; }
"""


class RiskGrid(JSComponent):
    """Risk cells grouped by profile; ``cells`` come from ``shaping.heatmap_cells``."""

    cells = param.List(default=[], doc="One dict per server (see shaping.heatmap_cells).")
    selected = param.String(default="", doc="Name of the server whose detail is open.")
    stale = param.Boolean(default=False, doc="Grey the grid out: the data is STALE.")

    _esm = _ESM
    _stylesheets = [_CSS]  # noqa: RUF012 (Panel's class-level convention)

    def __init__(self, on_select: Callable[[str], Any] | None = None, **params: Any) -> None:
        super().__init__(**params)
        self._on_select = on_select
        self.param.watch(self._selected_changed, "selected")

    def _selected_changed(self, event: param.parameterized.Event) -> None:
        """A click in the browser set ``selected``; tell the session (once per change)."""
        if event.new and self._on_select is not None:
            self._on_select(event.new)
