"""The run report's page template, style sheet and script (all inline in the page).

The script shows the time under the pointer on every time chart, and checks the page: it
collects JavaScript errors into the ``data-errors`` attribute of ``<html>``, and once the
page is loaded sets ``data-rendered="ok"`` on ``<body>`` when every chart has a drawn area
(``data-charts``/``data-drawn`` count them; ``data-ready-ms``: milliseconds from navigation
to then, parsing and layout included), so a headless browser can tell a drawn report from a
broken one.
"""

from __future__ import annotations

CSS = """
:root{--fg:#1f2933;--muted:#66788a;--line:#d9e2ec;--bg:#f5f7fa;--card:#fff;--bad:#e15759}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:18px 24px 40px}
header h1{font-size:24px;margin:8px 0 2px;font-weight:650}
.status{font-style:normal;font-size:13px;padding:2px 9px;border-radius:10px;
 vertical-align:middle;background:#e4e7eb;color:#3e4c59;font-weight:600}
.status.done{background:#d9f2e3;color:#1e7145}.status.running{background:#dbeafe;color:#1d4ed8}
.status.failed,.status.interrupted{background:#fde2e1;color:#b42318}
.meta{color:var(--muted);margin:2px 0 14px;font-size:13px;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:20px;font-weight:650;white-space:nowrap;overflow:hidden;
 text-overflow:ellipsis}
.card span{display:block;color:var(--fg);font-size:12px;overflow:hidden;text-overflow:ellipsis}
.card small{color:var(--muted);font-size:11px}
.card.bad b{color:var(--bad)}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
 padding:12px 16px 10px;margin-top:16px}
h2{font-size:16px;margin:0 0 8px;font-weight:650}
h3{font-size:14px;margin:4px 0;font-weight:600}h3 small{color:var(--muted);font-weight:400}
h4{font-size:12px;margin:8px 0 2px;color:var(--muted)}
svg.chart{width:100%;height:auto;display:block}
svg text{font-size:11px;fill:#52606d}
.xl{text-anchor:middle}.yl{text-anchor:end;dominant-baseline:middle}
.xt{text-anchor:end;fill:#9aa5b1}.yt{fill:#9aa5b1;dominant-baseline:hanging}
.rl{text-anchor:end;dominant-baseline:middle;font-size:10px}
.grid{stroke:#edf0f3}.axis{stroke:#9aa5b1}.tick{stroke:#9aa5b1}.sep{stroke:#9aa5b1}
.stripe{fill:#f7f9fb}
line.attempt{stroke:#b42318;stroke-dasharray:4 3}text.attempt{fill:#b42318;font-size:10px}
.cursor line{stroke:#1f2933;stroke-width:.6;stroke-dasharray:3 2;pointer-events:none}
.cursor text{font-size:10px;fill:#1f2933;pointer-events:none}
.line{fill:none;stroke-width:1.6;stroke-linejoin:round}
.band{opacity:.18}.area{opacity:.85}.limit{stroke:#b42318;stroke-dasharray:5 4}
.bar:hover,.comp:hover{stroke:#1f2933;stroke-width:1}
.run{opacity:.55}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:4px 0 2px 110px;font-size:12px;
 color:#3e4c59}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;
 vertical-align:-1px}
.note,.none{color:var(--muted);font-size:12px;margin:4px 0}
.none{font-style:italic}
.metrics{display:grid;grid-template-columns:1fr;gap:12px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:8px}
.pair svg:only-child{grid-column:1/3}
.totals{border-collapse:collapse;font-size:12px;margin:8px 0 4px 110px}
.totals th,.totals td{padding:2px 10px;border-bottom:1px solid #eef1f4;text-align:left}
.totals th{color:var(--muted);font-weight:500}.num{text-align:right!important}
div.scroll{max-height:560px;overflow:auto}
table.fail{border-collapse:collapse;width:100%;font-size:13px}
.fail th{position:sticky;top:0;background:#fff;text-align:left;color:var(--muted);
 font-weight:500;border-bottom:1px solid var(--line);padding:4px 6px}
.fail td{border-bottom:1px solid #eef1f4;padding:5px 6px;vertical-align:top}
.fail td:nth-child(2){white-space:nowrap}
.kind{font-size:11px;padding:1px 6px;border-radius:8px;background:#fde2e1;color:#b42318}
.kind.restart{background:#fff1d6;color:#9a5b00}
summary{cursor:pointer;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f5f7fa;border:1px solid var(--line);border-radius:6px;padding:8px;
 font-size:11.5px;overflow:auto;max-height:320px;white-space:pre-wrap}
footer{color:#9aa5b1;font-size:11px;margin-top:18px;text-align:center}
@media (max-width:800px){.pair{grid-template-columns:1fr}}
"""

HEAD_JS = """
(function(){var errs=[];window.addEventListener('error',function(e){
errs.push(String(e.message||e));document.documentElement.setAttribute('data-errors',
errs.join(' | '));});})();
"""

JS = """
(function(){
  // the time under the pointer, on every time axis at once
  var NS = 'http://www.w3.org/2000/svg', timed = document.querySelectorAll('svg.chart[data-x0]');
  function label(t) {
    var a = Math.abs(t);
    if (a < 120) return '+' + t.toFixed(a < 10 ? 2 : 1) + ' s';
    if (a < 7200) return '+' + Math.floor(t / 60) + ' min ' + Math.round(t % 60) + ' s';
    return '+' + Math.floor(t / 3600) + ' h ' + Math.round(t % 3600 / 60) + ' min';
  }
  function cursor(svg) {
    if (!svg._cursor) {
      var g = document.createElementNS(NS, 'g'), line = document.createElementNS(NS, 'line'),
          text = document.createElementNS(NS, 'text');
      g.setAttribute('class', 'cursor');
      line.setAttribute('y1', svg.dataset.top);
      line.setAttribute('y2', +svg.dataset.top + +svg.dataset.ph);
      text.setAttribute('y', +svg.dataset.top + 10);
      g.appendChild(line); g.appendChild(text); svg.appendChild(g);
      svg._cursor = {g: g, line: line, text: text};
    }
    return svg._cursor;
  }
  function show(t) {
    for (var i = 0; i < timed.length; i++) {
      var svg = timed[i], d = svg.dataset, c = cursor(svg);
      var inside = t !== null && t >= +d.x0 && t <= +d.x1;
      c.g.style.display = inside ? '' : 'none';
      if (!inside) continue;
      var x = +d.left + (t - d.x0) / (d.x1 - d.x0) * d.pw;
      c.line.setAttribute('x1', x); c.line.setAttribute('x2', x);
      c.text.setAttribute('x', x + 4); c.text.textContent = label(t);
    }
  }
  for (var i = 0; i < timed.length; i++) {
    timed[i].addEventListener('mousemove', function(e) {
      var d = this.dataset, box = this.getBoundingClientRect();
      var vx = (e.clientX - box.left) / box.width * this.viewBox.baseVal.width;
      var f = (vx - d.left) / d.pw;
      show(f >= 0 && f <= 1 ? +d.x0 + f * (d.x1 - d.x0) : null);
    });
    timed[i].addEventListener('mouseleave', function() { show(null); });
  }
})();
(function(){
  var charts = document.querySelectorAll('svg.chart'), drawn = 0;
  for (var i = 0; i < charts.length; i++) {
    var box = charts[i].getBBox();
    if (box.width > 0 && box.height > 0 && charts[i].childElementCount > 0) drawn++;
  }
  document.body.setAttribute('data-charts', String(charts.length));
  document.body.setAttribute('data-drawn', String(drawn));
  document.body.setAttribute('data-rendered', drawn === charts.length ? 'ok' : 'incomplete');
  document.body.setAttribute('data-ready-ms', String(Math.round(performance.now())));
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{css}</style><script>{head_js}</script></head>
<body><main>{body}<footer>{footer}</footer></main><script>{js}</script></body></html>
"""
