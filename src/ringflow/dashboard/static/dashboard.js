// ringflow dashboard: live refresh of marked regions, confirmations, editor line jumps.
// No build step and no dependencies; the pages work without it (refresh by reloading).
(function () {
  "use strict";

  // An element with data-refresh="URL" is replaced by the fragment at URL every data-every ms.
  // The server leaves data-refresh off once nothing can change (a call and its callbacks are
  // over), which stops the polling.
  function poll(el) {
    var every = parseInt(el.getAttribute("data-every") || "2000", 10);
    var timer = setTimeout(function tick() {
      if (!el.isConnected) return;
      if (document.hidden) { timer = setTimeout(tick, every); return; }
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html === null || !el.isConnected) { timer = setTimeout(tick, every * 2); return; }
          var box = document.createElement("div");
          box.innerHTML = html.trim();
          var fresh = box.firstElementChild;
          if (!fresh) return;
          el.replaceWith(fresh);
          if (fresh.hasAttribute("data-refresh")) poll(fresh);
        })
        .catch(function () { timer = setTimeout(tick, every * 2); });
    }, every);
    return timer;
  }

  function confirmForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var question = form.getAttribute && form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) event.preventDefault();
    });
  }

  // Clicking a problem in the editor puts the cursor on its line.
  function editorJumps() {
    var source = document.getElementById("source");
    if (!source) return;
    document.querySelectorAll(".problem[data-line]").forEach(function (p) {
      p.addEventListener("click", function () {
        var line = parseInt(p.getAttribute("data-line"), 10);
        var lines = source.value.split("\n");
        var start = 0;
        for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
        source.focus();
        source.setSelectionRange(start, start + (lines[line - 1] || "").length);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(poll);
    confirmForms();
    editorJumps();
  });
})();
