"""What a person sees of the plotly figures on a page: blank figures, overlapping or cut-off text, and
image panels too small to read, measured on the rendered DOM.

``figure_problems(page)`` returns one line per problem (empty when every figure is fine):

- blank: a figure with no trace drawn (no image, heat map, line, marker or bar);
- overlap: two visible text elements of one figure (titles, subtitles, subplot titles, axis titles,
  tick labels, legend entries, colour-bar titles, slider labels, annotations) whose drawn outlines
  intersect; rotated text is compared by its rotated outline, not its bounding rectangle;
- cut off: visible text reaching outside its figure;
- small: an image panel (a ``go.Image``, or a heat map on axes with square pixels) whose shorter
  drawn side is under ``min_panel`` px.
"""

from __future__ import annotations

MEASURE = r"""
(minPanel) => {
  const out = [];
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const hidden = (el) => {
    for (let e = el; e && e.nodeType === 1; e = e.parentNode) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden' || parseFloat(s.opacity) === 0) return true;
      if (e.classList && e.classList.contains('js-plotly-plot')) break;
    }
    const fill = getComputedStyle(el).fill || '';
    const m = fill.match(/rgba\([^)]*,\s*([\d.]+)\)/);
    return !!(m && parseFloat(m[1]) === 0);
  };
  const quad = (el) => {
    const b = el.getBBox();
    const ctm = el.getScreenCTM();
    if (!ctm || b.width === 0 || b.height === 0) return null;
    const svg = el.ownerSVGElement;
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]].map(([x, y]) => {
      const p = svg.createSVGPoint(); p.x = x; p.y = y;
      const q = p.matrixTransform(ctm);
      return [q.x, q.y];
    });
  };
  const shrink = (q, d) => {  // pull each corner d px towards the centre (1 px of tolerance)
    const cx = q.reduce((s, p) => s + p[0], 0) / 4, cy = q.reduce((s, p) => s + p[1], 0) / 4;
    return q.map(([x, y]) => {
      const dx = cx - x, dy = cy - y, n = Math.hypot(dx, dy) || 1;
      return [x + d * dx / n, y + d * dy / n];
    });
  };
  const separated = (a, b) => {  // separating-axis test for two convex quadrilaterals
    for (const poly of [a, b]) {
      for (let i = 0; i < 4; i++) {
        const [x1, y1] = poly[i], [x2, y2] = poly[(i + 1) % 4];
        const nx = y2 - y1, ny = x1 - x2;
        const pa = a.map(([x, y]) => x * nx + y * ny), pb = b.map(([x, y]) => x * nx + y * ny);
        if (Math.max(...pa) <= Math.min(...pb) || Math.max(...pb) <= Math.min(...pa)) return true;
      }
    }
    return false;
  };
  plots.forEach((gd, i) => {
    const layout = gd._fullLayout || {};
    const given = gd.layout && gd.layout.title;  // the figure's own title (plotly fills in a placeholder)
    const titleText = (given && (typeof given === 'string' ? given : given.text)) || '';
    const name = (titleText.split('<br>')[0] || gd.id || `figure ${i}`).slice(0, 70);
    const where = gd.closest('.jp-Cell') ? ` (cell ${[...document.querySelectorAll('.jp-Cell')].indexOf(gd.closest('.jp-Cell'))})` : '';
    const label = `“${name}”${where}`;
    const data = gd._fullData || [];
    const drawn = gd.querySelectorAll(
      '.imagelayer image, .heatmaplayer image, .scatterlayer .trace path.js-line, ' +
      '.scatterlayer .trace .point, .barlayer .trace .point path, .barlayer .trace path');
    if (!data.length || !drawn.length) out.push(`blank: ${label} has no trace drawn`);
    const box = gd.getBoundingClientRect();
    const texts = [...gd.querySelectorAll('svg text')]
      .filter((t) => t.textContent.trim() && !hidden(t))
      .map((t) => ({el: t, text: t.textContent.trim().slice(0, 50), q: quad(t)}))
      .filter((t) => t.q);
    for (const t of texts) {
      const xs = t.q.map((p) => p[0]), ys = t.q.map((p) => p[1]);
      if (Math.min(...xs) < box.left - 1 || Math.max(...xs) > box.right + 1 ||
          Math.min(...ys) < box.top - 1 || Math.max(...ys) > box.bottom + 1) {
        out.push(`cut off: ${label}: “${t.text}” reaches outside the figure`);
      }
    }
    for (let a = 0; a < texts.length; a++) {
      for (let b = a + 1; b < texts.length; b++) {
        if (!separated(shrink(texts[a].q, 1), shrink(texts[b].q, 1))) {
          out.push(`overlap: ${label}: “${texts[a].text}” and “${texts[b].text}”`);
        }
      }
    }
    const imageLike = data.some((t) => t.type === 'image' ||
      (t.type === 'heatmap' && ((layout['yaxis' + (t.yaxis || 'y').slice(1)] || {}).scaleanchor)));
    if (imageLike) {
      for (const img of gd.querySelectorAll('.imagelayer image, .heatmaplayer image')) {
        const r = img.getBoundingClientRect();
        if (Math.min(r.width, r.height) < minPanel - 0.5) {
          out.push(`small: ${label}: an image panel is ${Math.round(r.width)}×${Math.round(r.height)} px`);
        }
      }
    }
  });
  return out;
}
"""

ALL_DRAWN = """() => [...document.querySelectorAll('.js-plotly-plot')].every(
  (gd) => gd._fullLayout && gd.querySelector('.main-svg'))"""


def figure_problems(page, min_panel: int = 128) -> list[str]:
    """Problems of every plotly figure on the page (see the module docstring)."""
    return page.evaluate(MEASURE, min_panel)


def figure_count(page) -> int:
    return page.locator(".js-plotly-plot").count()
