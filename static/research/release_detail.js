// A release while it is queued or building: poll its status, show the progress, and reload
// the page (with its files) once the build has ended. The status URL comes from
// #release-poll's data-status-url (no inline script: the CSP forbids it). Loaded with defer.
(function () {
  "use strict";
  var holder = document.getElementById("release-poll");
  if (!holder) { return; }
  var url = holder.dataset.statusUrl;
  var waiting = ["queued", "building"];
  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        document.getElementById("progress").value = data.progress;
        document.getElementById("release-status").textContent =
          data.label + (data.note ? " \u00b7 " + data.note : "");
        if (waiting.indexOf(data.status) >= 0) { setTimeout(poll, 1000); } else { location.reload(); }
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  poll();
})();
