// ringflow dashboard: campaign progress, moved live from the dashboard's progress JSON.
// An element with data-progress="URL" polls URL every data-every ms while one of its campaigns
// can still change; each [data-campaign=ID] on the page takes its campaign's status, counts per
// state (progress bars and figures) and the actions it offers. Without this script the pages
// still show the progress as of their loading.
(function () {
  "use strict";

  function each(root, selector, fn) {
    Array.prototype.forEach.call(root.querySelectorAll(selector), fn);
  }

  function show(box, c) {
    each(box, "[data-campaign-status]", function (badge) {
      badge.textContent = c.status;
      badge.className = "badge " + c.tone;
    });
    each(box, "[data-pause-reason]", function (el) { el.textContent = c.reason; });
    each(box, "[data-attempts]", function (el) { el.textContent = String(c.attempts); });
    Object.keys(c.counts).forEach(function (state) {
      each(box, 'progress[data-state="' + state + '"]', function (bar) {
        bar.max = Math.max(c.total, 1);
        bar.value = c.counts[state];
        bar.textContent = String(c.counts[state]);
      });
      each(box, '[data-count="' + state + '"]', function (el) {
        el.textContent = String(c.counts[state]);
      });
    });
    each(box, "form[data-action]", function (form) {
      form.hidden = c.actions.indexOf(form.getAttribute("data-action")) < 0;
    });
  }

  function apply(data) {
    data.campaigns.forEach(function (c) {
      each(document, '[data-campaign="' + c.id + '"]', function (box) { show(box, c); });
    });
    return data.campaigns.some(function (c) { return c.live; });
  }

  function poll(el) {
    var every = parseInt(el.getAttribute("data-every") || "1500", 10);
    var url = el.getAttribute("data-progress");
    function tick() {
      if (!el.isConnected) return;
      if (document.hidden) { setTimeout(tick, every); return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          // Signed out: the JSON answers 401, or a redirect to the sign-in page.
          if (r.status === 401 || r.redirected) { window.location.reload(); return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (data) {
          if (data === null) { setTimeout(tick, every * 2); return; }
          if (apply(data)) setTimeout(tick, every);
          else el.removeAttribute("data-progress");  // nothing left to change: stop
        })
        .catch(function () { setTimeout(tick, every * 2); });
    }
    setTimeout(tick, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    each(document, "[data-progress]", poll);
  });
})();
