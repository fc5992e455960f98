"""The console's only stylesheet and script, served from ``/console/static/`` (no build step,
nothing from the internet; the Content-Security-Policy allows only these, so no inline code).

The script does two things: it keeps a mine page's points live from the server-sent events of
``/console/mine/<id>/events`` (event ``points``: the changed points; event ``alerts``: the
alert list changed, fetched again as HTML — but not while the dispatcher is filling in one of
its forms: a notice says so instead) and it asks before ending a silence.
"""

CSS = """
body { font-family: "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif; margin: 0;
       background: #f4f5f7; color: #1d2330; font-size: 15px; }
header { background: #1d2b45; color: #fff; padding: 8px 16px; display: flex; gap: 16px;
         align-items: center; flex-wrap: wrap; }
header a { color: #fff; }
header button { color: #fff; background: transparent; border: 1px solid #9fb0d0;
                border-radius: 3px; cursor: pointer; }
header .who { margin-left: auto; }
header form { display: inline; }
main { padding: 12px 16px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 17px; margin: 18px 0 6px; }
table { border-collapse: collapse; background: #fff; width: 100%; margin-bottom: 8px; }
th, td { border: 1px solid #d5d9e0; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #e8ebf0; font-weight: normal; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { background: #fff; border: 1px solid #d5d9e0; padding: 10px 14px; min-width: 300px; }
.card h2 { margin-top: 0; }
.state { font-weight: bold; padding: 1px 6px; border-radius: 3px; white-space: nowrap; }
.st-ok { background: #d9f2dd; color: #14532d; }
.st-alarm { background: #f59e0b; color: #000; }
.st-power_off { background: #b91c1c; color: #fff; }
.st-fault { background: #7c3aed; color: #fff; }
.st-calibrating { background: #38bdf8; color: #000; }
.st-no_data { background: #9ca3af; color: #000; }
.sev-critical { border-left: 6px solid #b91c1c; }
.sev-alarm { border-left: 6px solid #f59e0b; }
.sev-warning { border-left: 6px solid #facc15; }
.note { color: #555; font-size: 13px; }
#alerts-changed { cursor: pointer; }
.flash { background: #fff7d6; border: 1px solid #e5c84a; padding: 6px 10px; }
.error { background: #fde2e2; border: 1px solid #e08b8b; padding: 6px 10px; }
form.inline { display: inline-flex; gap: 4px; flex-wrap: wrap; align-items: center; }
input, select, textarea, button { font: inherit; }
.login { max-width: 340px; margin: 60px auto; background: #fff; padding: 20px;
         border: 1px solid #d5d9e0; }
.login label { display: block; margin: 8px 0; }
.login input { width: 100%; box-sizing: border-box; }
"""

JS = """
"use strict";
(function () {
  var page = document.body.dataset;
  if (page.events) {
    var source = new EventSource(page.events);
    source.addEventListener("points", function (e) {
      JSON.parse(e.data).forEach(function (p) {
        var row = document.getElementById("p-" + p.id);
        if (!row) { return; }
        row.querySelector(".value").textContent = p.v;
        var state = row.querySelector(".state");
        state.className = "state st-" + p.st;
        state.textContent = p.label;
        state.dataset.state = p.st;
        row.querySelector(".at").textContent = p.at;
      });
    });
    // The alert list is fetched again when it changed (event "alerts" carries the mine's
    // alert sequence number; the page knows the one it was rendered at) — but never under
    // the dispatcher's hands: while a form in it has focus or text, a notice says the list
    // changed and the refresh waits until the form is left empty or the notice is clicked.
    var shown = Number(page.alertsSeq || 0), wanted = shown;
    var list = document.getElementById("alerts");
    var notice = document.getElementById("alerts-changed");
    function busy() {
      if (list.contains(document.activeElement) && document.activeElement.tagName !== "BODY") {
        return true;
      }
      var inputs = list.querySelectorAll("input[type=text], input:not([type])");
      return Array.prototype.some.call(inputs, function (i) { return i.value !== ""; });
    }
    function refresh(force) {
      if (wanted <= shown) { return; }
      if (!force && busy()) { notice.hidden = false; return; }
      var seq = wanted;
      fetch(page.alerts, {credentials: "same-origin"}).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html === null) { return; }
        list.innerHTML = html;
        shown = Math.max(shown, seq);
        notice.hidden = true;
      });
    }
    source.addEventListener("alerts", function (e) {
      wanted = Math.max(wanted, Number(JSON.parse(e.data).seq));
      refresh(false);
    });
    list.addEventListener("focusout", function () {
      setTimeout(function () { refresh(false); }, 0);
    });
    notice.addEventListener("click", function () { refresh(true); });
  }
  document.addEventListener("submit", function (e) {
    var ask = e.target.dataset.confirm;
    if (ask && !window.confirm(ask)) { e.preventDefault(); }
  });
})();
"""
