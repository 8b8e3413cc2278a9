// Live pages without a reload: ask /live every 2 s; when what the viewer may see changed, fetch this page
// again and swap its live regions ([data-live]) in place. A region with a form being typed into is left
// alone. With JavaScript off the pages still work; they just do not refresh by themselves.
(function () {
  "use strict";
  var regions = document.querySelectorAll("[data-live]");
  if (!regions.length || !window.fetch || !window.DOMParser) { return; }
  var state = null;
  var busy = false;

  function typing(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) { return true; }
    var fields = region.querySelectorAll("textarea");
    for (var i = 0; i < fields.length; i++) { if (fields[i].value) { return true; } }
    return false;
  }

  function refresh() {
    return fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (region) {
          var replacement = fresh.querySelector('[data-live="' + region.getAttribute("data-live") + '"]');
          if (replacement && !typing(region)) { region.innerHTML = replacement.innerHTML; }
        });
      });
  }

  function poll() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch("/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (!body || !body.state) { return null; }
        var changed = state !== null && body.state !== state;
        state = body.state;
        return changed ? refresh() : null;
      })
      .catch(function () { /* offline for a moment: try again on the next tick */ })
      .then(function () { busy = false; });
  }

  poll();
  window.setInterval(poll, 2000);
}());
